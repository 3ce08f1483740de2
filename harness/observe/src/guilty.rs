//! Which frame a report is about: the first one that is not the kernel's own machinery for
//! reporting, trapping, locking, waiting, interrupts, unwinding, string helpers or freeing.

use crate::frames::Frame;

/// Functions that report, trap, lock, wait, schedule, unwind, instrument or free on behalf of
/// someone else: a title names the first frame that is none of these. Entries ending in `*`
/// are prefixes.
#[rustfmt::skip]
const INFRASTRUCTURE: &[&str] = &[
    // Reporting and trap handling.
    "dump_stack*", "__dump_stack", "show_stack*", "show_trace*", "print_address_description*",
    "print_report", "print_circular_bug*", "printk*", "_printk", "vprintk*", "panic", "__warn*",
    "warn_slowpath*", "report_bug", "handle_bug", "fixup_bug", "do_error_trap", "do_trap",
    "do_invalid_op", "invalid_op", "exc_invalid_op", "asm_exc_invalid_op", "die", "__die*",
    "oops_*", "page_fault_oops", "no_context", "bad_area*", "__bad_area*",
    "kernelmode_fixup_or_oops", "do_user_addr_fault", "do_kern_addr_fault", "exc_page_fault",
    "asm_exc_page_fault", "page_fault", "do_page_fault", "__do_page_fault",
    "exc_general_protection", "asm_exc_general_protection", "nmi_cpu_backtrace*",
    "nmi_trigger_cpumask_backtrace", "trigger_all_cpu_backtrace",
    "trigger_single_cpu_backtrace", "refcount_warn_saturate", "refcount_error_report",
    "bad_page", "check_free_page*", "free_pages_check*", "free_page_is_bad*",
    // Sanitizers and coverage.
    "kasan_report*", "__kasan_report", "kasan_check_range", "kasan_check_read",
    "kasan_check_write", "__kasan_check_*", "check_memory_region*", "check_slab_allocation",
    "kasan_save_*", "kasan_set_track", "kasan_record_aux_stack*", "__kasan_*", "____kasan_*",
    "kasan_slab_free", "kasan_kmalloc", "__asan_*", "__ubsan_*", "__sanitizer_cov_*",
    "write_comp_data", "check_kcov_mode", "instrument_*",
    // Lockdep and locking primitives.
    "lock_acquire*", "__lock_acquire*", "lock_release", "lock_acquired", "lock_contended",
    "check_noncircular", "check_prev_add", "check_prevs_add", "validate_chain", "mark_lock*",
    "lockdep_*", "debug_spin_*", "do_raw_spin_*", "do_raw_read_*", "do_raw_write_*", "_raw_*",
    "__raw_*", "spin_lock*", "spin_unlock*", "spin_trylock*", "raw_spin_*", "read_lock*",
    "read_unlock*", "write_lock*", "write_unlock*", "queued_*", "native_queued_*",
    "__pv_queued_*", "__mutex_*", "mutex_lock*", "mutex_unlock*", "mutex_trylock*", "down",
    "down_*", "__down*", "up", "up_read", "up_write", "rwsem_*", "__rwsem_*", "percpu_down_*",
    "__percpu_down_*", "percpu_up_*", "percpu_rwsem_*", "rt_mutex*", "__rt_mutex*", "rt_spin*",
    "rcu_read_lock*", "rcu_read_unlock*", "__rcu_read_*", "rcu_lock_acquire",
    "rcu_lock_release",
    // Scheduling and waiting.
    "__switch_to*", "__schedule*", "schedule", "schedule_*", "context_switch",
    "finish_task_switch*", "preempt_schedule*", "io_schedule*", "do_wait_for_common",
    "__wait_for_common", "wait_for_common*", "wait_for_completion*", "wait_on_bit*",
    "__wait_on_bit*", "out_of_line_wait_on_bit*", "bit_wait*", "wait_var_event*",
    "___wait_var_event", "prepare_to_wait*", "finish_wait", "folio_wait_*", "__folio_lock*",
    "folio_lock*", "wait_on_page_*", "__lock_page*", "lock_page*", "io_wait_event*",
    "__wait_event*", "wait_event*", "synchronize_rcu*", "synchronize_srcu*",
    "__synchronize_srcu", "wait_rcu_gp", "__wait_rcu_gp", "usleep_range*", "msleep*",
    "do_nanosleep", "hrtimer_nanosleep", "wake_atomic_t_function", "ktime_get*",
    // Interrupt entry, softirq and idle.
    "asm_sysvec_*", "sysvec_*", "__sysvec_*", "irqentry_*", "irq_exit*", "__irq_exit_rcu",
    "__do_softirq", "handle_softirqs", "do_softirq*", "invoke_softirq", "common_interrupt",
    "asm_common_interrupt", "__common_interrupt", "el0_*", "el1_*", "el1h_*", "el0t_*",
    "do_ext_irq", "ext_int_handler", "__flush_smp_call_function_queue", "csd_do_func",
    "generic_smp_call_function*", "rcu_core", "rcu_do_batch", "rcu_sched_clock_irq",
    "default_idle*", "do_idle", "cpu_startup_entry", "cpuidle_*", "native_safe_halt",
    "arch_cpu_idle*", "trace_hardirqs_*",
    // Stack walking.
    "unwind_*", "__unwind_*", "arch_stack_walk", "stack_trace_save*", "deref_stack_reg",
    "stack_access_ok", "get_stack_info*", "kernel_text_address", "__kernel_text_address",
    "is_bpf_text_address", "is_module_text_address", "is_ftrace_trampoline",
    // Memory, string and atomic helpers.
    "memset*", "__memset*", "memcpy*", "__memcpy*", "memmove*", "__memmove*", "memcmp",
    "__memcmp", "strlen", "strnlen", "strcpy", "strncpy*", "strscpy*", "strcmp", "strncmp",
    "copy_to_user*", "copy_from_user*", "_copy_to_user", "_copy_from_user", "raw_copy_to_user",
    "raw_copy_from_user", "copy_user_*", "rep_movs_alternative", "__get_user_*", "__put_user_*",
    "read_word_at_a_time", "atomic_*", "atomic64_*", "arch_atomic*", "raw_atomic*",
    "__refcount_*", "refcount_*", "kref_get", "kref_put",
    // Page freeing.
    "free_pcp_prepare", "free_pages_prepare", "free_unref_page*", "free_unref_folios",
    "free_pcppages_bulk", "__free_pages*", "free_pages", "__free_one_page", "free_one_page",
    "__folio_put*", "folio_put*", "folios_put*", "put_page*", "__put_page", "release_pages",
    "put_pages_list",
];

/// True when `name` (a frame's [`Frame::name`]) belongs to the kernel's reporting, locking,
/// waiting, interrupt, unwinding, helper or page-freeing machinery.
pub fn is_infrastructure(name: &str) -> bool {
    INFRASTRUCTURE
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *entry,
        })
}

/// The frame a report is about: the first reliable, non-inline frame outside the
/// infrastructure; failing that, an inline or guessed one; failing that, none.
pub fn guilty(frames: &[Frame]) -> Option<&Frame> {
    let candidates = || frames.iter().filter(|f| !is_infrastructure(f.name()));
    candidates()
        .find(|f| f.reliable && !f.inline)
        .or_else(|| candidates().find(|f| f.reliable))
        .or_else(|| candidates().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(line: &str) -> Frame {
        Frame::parse(line).unwrap_or_else(|| panic!("not a frame: {line:?}"))
    }

    #[test]
    fn guilty_skips_machinery_and_prefers_real_frames() {
        let frames: Vec<Frame> = [
            " ? __warn+0x9f/0x130",
            " ? refcount_warn_saturate+0x9c/0xe0",
            " ? ZSTD_getCParams_internal+0x220/0x220",
            " _raw_spin_unlock_bh+0x1e/0x30",
            " spin_unlock_bh include/linux/spinlock.h:396 [inline]",
            " nfs_direct_write_schedule_work+0x237/0x250 [nfs]",
        ]
        .iter()
        .map(|l| frame(l))
        .collect();
        assert_eq!(
            guilty(&frames).unwrap().function,
            "nfs_direct_write_schedule_work"
        );
        assert_eq!(
            guilty(&frames[..3]).unwrap().function,
            "ZSTD_getCParams_internal"
        );
        assert_eq!(guilty(&frames[..2]), None);
    }

    #[test]
    fn infrastructure_entries_are_names_or_prefixes() {
        assert!(INFRASTRUCTURE
            .iter()
            .all(|e| !e.trim_end_matches('*').contains('*')));
        assert!(is_infrastructure("trigger_all_cpu_backtrace"));
        assert!(is_infrastructure("__schedule_loop"));
        assert!(
            !is_infrastructure("schedulex"),
            "exact names are not prefixes"
        );
        assert!(!is_infrastructure("dax_insert_entry"));
        assert!(!is_infrastructure("kasan_remove_zero_shadow"));
    }
}
