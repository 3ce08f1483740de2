//! Direct I/O between the slow non-DAX ext4 and an ext4 DAX mapping really pins the DAX
//! pages while the request is in flight, and direct I/O between two DAX files pins nothing:
//! `/proc/vmstat`'s FOLL_PIN counters sampled while an io_uring read is in flight, and the
//! refcount probe's histogram read in the middle of it. Boots debian-6.12 and debian-7.3 one
//! after the other: `ci/test.sh` runs it with `--ignored`.

use std::time::Duration;

use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;
use daxdiff_prog::wire::RefcountReading;

/// Reads requested one after another, each in flight for the slow disk's delay.
const FLIGHTS: usize = 10;
/// Pages of each read's buffer (64 KiB of a 4 KiB-mapped ext4 DAX file).
const PAGES: u64 = 16;
/// What FOLL_PIN adds to an order-0 page's refcount (GUP_PIN_COUNTING_BIAS).
const PIN_BIAS: i64 = 1024;

/// A 64 KiB file written (buffered, so nothing is pinned) on `source` and reopened O_DIRECT,
/// an ext4 DAX file of 64 KiB mapped and populated, a second of quiet, then `FLIGHTS` io_uring
/// reads of the whole file into the mapping, each waited for before the next.
fn program(source: &str) -> String {
    let mut p = format!(
        "r0 = openat${source}(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r0, &buf[0x10000], 0x10000, 0x0)\n\
         fsync(r0)\n\
         r1 = openat${source}(AT_FDCWD, &\"file0\", O_RDWR|O_DIRECT, 0x1b6)\n\
         r2 = openat$ext4(AT_FDCWD, &\"file1\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r2, 0x10000)\n\
         r3 = mmap(0x0, 0x10000, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, r2, 0x0)\n\
         r4 = daxdiff_uring_setup(0x8)\n"
    );
    for _ in 0..10 {
        p.push_str("daxdiff_sleep(0x64)\n");
    }
    for _ in 0..FLIGHTS {
        p.push_str(
            "daxdiff_uring_submit$buf(r4, IORING_OP_READ, r1, &r3+0x0, 0x10000, 0x0)\n\
             daxdiff_uring_wait(r4)\n",
        );
    }
    p
}

/// Runs the program in the background and samples the FOLL_PIN counters every 50 ms until it
/// ends; the first sample with more pins held than before triggers a refcount reading (the
/// reads follow each other, so the pages are pinned nearly all the time from then on).
const SAMPLER: &str = r#"
pins() { awk '/^nr_foll_pin_acquired /{a=$2} /^nr_foll_pin_released /{r=$2} END{print a, r}' /proc/vmstat; }
held() { echo "$1" | awk '{print $1 - $2}'; }
p=$(pins)
echo "before $p"
held0=$(held "$p")
start=$(cut -d' ' -f1 /proc/uptime)
daxdiff-exec loop --count 1 --timeout-ms 60000 "$1" >/tmp/pin-loop.out 2>&1 &
pid=$!
probed=0
while kill -0 $pid 2>/dev/null; do
    p=$(pins)
    echo "during $p"
    if [ $probed = 0 ] && [ "$(held "$p")" -gt "$held0" ]; then
        daxdiff-exec refcounts >/tmp/pin-during.json
        probed=1
    fi
    sleep 0.05
done
end=$(cut -d' ' -f1 /proc/uptime)
wait $pid
[ $probed = 1 ] || daxdiff-exec refcounts >/tmp/pin-during.json
# io_uring drops a request's pins when it frees the request, which may come after the
# completion was reaped (seen: the last read's 16 pins released a moment after the program
# exited, on a loaded host): give the counters up to 3 s to settle; a leak stays a leak.
n=0
while [ "$(held "$(pins)")" -gt "$held0" ] && [ $n -lt 60 ]; do sleep 0.05; n=$((n + 1)); done
echo "after $(pins)"
echo "seconds $start $end"
cat /tmp/pin-loop.out >&2
"#;

/// What the counters showed over one run.
#[derive(Debug)]
struct Pins {
    /// Pins acquired from before the program to after it.
    acquired: i64,
    /// Pins released over the same time.
    released: i64,
    /// The most pins held at one sample, above those held before.
    most_held: i64,
    /// The reading taken during the reads (after them, when nothing was ever pinned).
    during: RefcountReading,
    seconds: f64,
}

fn pair(line: &str) -> (i64, i64) {
    let mut w = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<i64>().unwrap());
    (w.next().unwrap(), w.next().unwrap())
}

fn measure(vm: &mut daxdiff::vm::Vm, kernel: &str, source: &str) -> Pins {
    let path = format!("/tmp/pin-{source}.prog");
    let ssh = vm.ssh().unwrap();
    ssh.upload(program(source).as_bytes(), &path, 0o644)
        .unwrap();
    ssh.upload(SAMPLER.as_bytes(), "/tmp/pin-sample.sh", 0o755)
        .unwrap();
    let out = vm
        .run(
            &format!("sh /tmp/pin-sample.sh {path} && cat /tmp/pin-during.json"),
            Duration::from_secs(300),
        )
        .unwrap();
    let stdout = out.stdout_str();
    assert_eq!(out.status, 0, "{kernel}: {stdout}\n{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("\"completed\":1"),
        "{kernel} ({source}): the program must complete: {}",
        out.stderr_str()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let find = |tag: &str| lines.iter().find(|l| l.starts_with(tag)).copied().unwrap();
    let before = pair(find("before "));
    let after = pair(find("after "));
    let held0 = before.0 - before.1;
    let most_held = lines
        .iter()
        .filter(|l| l.starts_with("during "))
        .map(|l| pair(l))
        .map(|(a, r)| a - r - held0)
        .max()
        .unwrap_or(0);
    let secs: Vec<f64> = find("seconds ")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let json = lines.last().unwrap();
    let during: RefcountReading = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{kernel}: refcount reading {json:?}: {e}"));
    Pins {
        acquired: after.0 - before.0,
        released: after.1 - before.1,
        most_held,
        during,
        seconds: secs[1] - secs[0],
    }
}

fn check_kernel(kernel: &str) {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let p = prepare(&env, kernel).unwrap();
    let mut vm = p
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{kernel}: {e:#}"));
    let nodax = vm
        .topology
        .nodax
        .clone()
        .expect("the fuzzing guest has the nodax ext4");
    assert!(
        vm.topology.blkdev.is_some(),
        "{kernel}: no raw block device"
    );
    let bringup: Vec<String> = vm
        .topology
        .steps
        .iter()
        .filter(|s| {
            let n = s["name"].as_str().unwrap_or("");
            n.contains("slow")
                || n.contains("nodax")
                || n.contains("dm ")
                || n.contains("delay")
                || n.contains("(no DAX)")
        })
        .map(|s| format!("{} {} ms", s["name"], s["duration_ms"]))
        .collect();
    eprintln!("== {kernel}: slow disks' bring-up: {}", bringup.join(", "));

    let direct = measure(&mut vm, kernel, "nodax");
    eprintln!("== {kernel}: O_DIRECT nodax -> ext4 DAX mapping: {direct:?}");
    let ext4 = direct
        .during
        .ranges
        .iter()
        .find(|r| r.role.as_deref() == Some("ext4"))
        .expect("an ext4 range in the reading");
    let pinned = ext4.histogram.three_plus;
    eprintln!(
        "== {kernel}: ext4 pages at refcount >= 3 during the reads: {pinned}, highest refcount {}",
        ext4.max
    );
    // Every read pins the buffer's 16 pages, and each pin is dropped when it completes.
    assert!(
        direct.acquired >= FLIGHTS as i64 * PAGES as i64,
        "{kernel}: {direct:?}"
    );
    assert_eq!(direct.acquired, direct.released, "{kernel}: {direct:?}");
    assert!(direct.most_held >= PAGES as i64, "{kernel}: {direct:?}");
    // The probe sees the same: the mapped DAX pages carry the FOLL_PIN bias.
    assert!(
        pinned >= PAGES && ext4.max > PIN_BIAS,
        "{kernel}: the pinned DAX pages in the refcount reading: {ext4:?}"
    );
    // Each read stays in flight for the delay: the reads take at least that long together.
    assert!(
        direct.seconds >= FLIGHTS as f64 * f64::from(nodax.delay_ms) / 1000.0,
        "{kernel}: {direct:?}"
    );

    let copy = measure(&mut vm, kernel, "xfs");
    eprintln!("== {kernel}: O_DIRECT xfs DAX -> ext4 DAX mapping: {copy:?}");
    // From a DAX file the same reads are copies: nothing is pinned at all.
    assert_eq!(
        (copy.acquired, copy.released, copy.most_held),
        (0, 0, 0),
        "{kernel}: {copy:?}"
    );
    vm.shutdown().unwrap();
}

#[test]
#[ignore = "boots debian-6.12 and debian-7.3 guests; run with --ignored"]
fn odirect_from_a_non_dax_file_pins_the_dax_buffer_and_dax_to_dax_does_not() {
    let kernels = std::env::var("DAXDIFF_PIN_KERNELS")
        .unwrap_or_else(|_| "debian-6.12,debian-7.3".to_string());
    for k in kernels.split(',').filter(|k| !k.is_empty()) {
        check_kernel(k);
    }
}
