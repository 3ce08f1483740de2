// SPDX-License-Identifier: GPL-2.0
/*
 * daxdiff_probe: reference counts of the DAX page maps, read for the daxdiff harness.
 *
 * Reading /sys/kernel/debug/daxdiff/refcounts walks every "Persistent Memory" region of
 * iomem (ACPI NFIT and legacy e820 pmem), finds the dev_pagemaps that live in it with
 * get_dev_pagemap(), and prints one line per pgmap range:
 *
 *   daxdiff-refcounts 1
 *   range pgmap=0 index=0 nr_range=1 type=fsdax start=0x100000000 end=0x13fffffff
 *     first_pfn=0x101200 pages=257536 ref=257537 tails=0 compound=0
 *     ref0=0 ref1=257536 ref2=0 ref3plus=0 neg=0 max=1
 *
 * (one line in the file). Fields, all `key=value`, new keys only ever appended:
 *   pgmap      ordinal of the dev_pagemap in this reading; its ranges share `ref`
 *   type       fsdax, devdax (MEMORY_DEVICE_GENERIC), private, coherent, p2pdma
 *   start/end  the range, inclusive, as in struct range
 *   first_pfn  first pfn with a ZONE_DEVICE struct page: range 0 starts after the altmap
 *              (the memmap kept on the device itself), as memremap.c's pfn_first() does
 *   pages      pfns from first_pfn to end
 *   ref        the pgmap's percpu_ref, read exactly (per-CPU counters summed under
 *              stop_machine, see percpu_ref_count_stopped()) minus the one reference
 *              this reading holds
 *   tails      tail pages of compound folios: their count lives in the head page
 *   compound   head pages of compound folios (devdax vmemmap_shift, fsdax PMD folios)
 *   ref0..neg  head and order-0 pages by refcount: 0, 1, 2, 3 or more, negative
 *   max        highest page refcount seen
 * A dev_pagemap that is being torn down (its ref killed) cannot be referenced any more
 * and is not listed. `truncated` lines say a fixed table overflowed.
 */

#include <linux/debugfs.h>
#include <linux/ioport.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/percpu-refcount.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/stop_machine.h>

#define DAXDIFF_FORMAT_VERSION 1
#define MAX_REGIONS 32
#define MAX_PGMAPS 64

struct pmem_region {
	u64 start;
	u64 end;
};

struct reading {
	struct pmem_region regions[MAX_REGIONS];
	int nr_regions;
	bool regions_truncated;
	/* Each holds exactly one reference taken by get_dev_pagemap(). */
	struct dev_pagemap *pgmaps[MAX_PGMAPS];
	long refs[MAX_PGMAPS];
	int nr_pgmaps;
	bool pgmaps_truncated;
};

struct page_counts {
	unsigned long pages, tails, compound;
	unsigned long ref0, ref1, ref2, ref3plus, neg;
	int max;
};

static struct dentry *debugfs_dir;

static struct dev_pagemap *pgmap_get(unsigned long pfn)
{
#ifdef DAXDIFF_GET_DEV_PAGEMAP_PFN_ONLY
	return get_dev_pagemap(pfn);
#else
	return get_dev_pagemap(pfn, NULL);
#endif
}

static const char *pgmap_type_name(const struct dev_pagemap *pgmap)
{
	switch (pgmap->type) {
	case MEMORY_DEVICE_FS_DAX:
		return "fsdax";
	case MEMORY_DEVICE_GENERIC:
		return "devdax";
	case MEMORY_DEVICE_PRIVATE:
		return "private";
	case MEMORY_DEVICE_COHERENT:
		return "coherent";
	case MEMORY_DEVICE_PCI_P2PDMA:
		return "p2pdma";
	}
	return "unknown";
}

static int add_region(struct resource *res, void *arg)
{
	struct reading *r = arg;

	if (r->nr_regions == MAX_REGIONS) {
		r->regions_truncated = true;
		return 1;
	}
	r->regions[r->nr_regions].start = res->start;
	r->regions[r->nr_regions].end = res->end;
	r->nr_regions++;
	return 0;
}

/* Keeps the reference if @pgmap is new to this reading; returns false to make the caller
 * drop it otherwise. */
static bool remember_pgmap(struct reading *r, struct dev_pagemap *pgmap)
{
	int i;

	for (i = 0; i < r->nr_pgmaps; i++)
		if (r->pgmaps[i] == pgmap)
			return false;
	if (r->nr_pgmaps == MAX_PGMAPS) {
		r->pgmaps_truncated = true;
		return false;
	}
	r->pgmaps[r->nr_pgmaps++] = pgmap;
	return true;
}

static const struct range *range_containing(struct dev_pagemap *pgmap, unsigned long pfn)
{
	u64 phys = PFN_PHYS(pfn);
	int i;

	for (i = 0; i < pgmap->nr_range; i++)
		if (phys >= pgmap->ranges[i].start && phys <= pgmap->ranges[i].end)
			return &pgmap->ranges[i];
	return NULL;
}

/*
 * pgmap ranges are added with subsection granularity (arch_add_memory() refuses less), so
 * a pfn without a pgmap lets the walk skip to the next subsection.
 */
static void collect_pgmaps(struct reading *r)
{
	int i;

	for (i = 0; i < r->nr_regions; i++) {
		unsigned long pfn = PHYS_PFN(r->regions[i].start);
		unsigned long last = PHYS_PFN(r->regions[i].end);

		while (pfn <= last) {
			struct dev_pagemap *pgmap = pgmap_get(pfn);
			const struct range *range;
			unsigned long next;

			if (!pgmap) {
				pfn = ALIGN(pfn + 1, PAGES_PER_SUBSECTION);
				continue;
			}
			range = range_containing(pgmap, pfn);
			next = range ? PHYS_PFN(range->end) + 1 : pfn + 1;
			if (!remember_pgmap(r, pgmap))
				put_dev_pagemap(pgmap);
			pfn = max(next, pfn + 1);
			cond_resched();
		}
	}
}

/*
 * lib/percpu-refcount.c keeps this bias in data->count while the per-CPU counters are live,
 * so the atomic count cannot reach zero before they are folded in (unchanged since 3.18).
 */
#define DAXDIFF_PERCPU_COUNT_BIAS (1LU << (BITS_PER_LONG - 1))

/*
 * A percpu_ref's count, read while no CPU can take or drop a reference (stop_machine).
 *
 * Not by switching the ref to atomic mode and back: a pgmap's ref is initialised without
 * PERCPU_REF_ALLOW_REINIT, and for such a ref the switch to atomic frees the per-CPU
 * counters and marks it __PERCPU_REF_ATOMIC_DEAD, after which percpu_ref_tryget_live() and
 * so get_dev_pagemap() fail for good (seen on 6.12: percpu_count_ptr == 3 afterwards).
 */
static long percpu_ref_count_stopped(struct percpu_ref *ref)
{
	unsigned long ptr = READ_ONCE(ref->percpu_count_ptr);
	unsigned long __percpu *percpu_count =
		(unsigned long __percpu *)(ptr & ~__PERCPU_REF_ATOMIC_DEAD);
	unsigned long count = atomic_long_read(&ref->data->count);
	int cpu;

	/* In atomic mode, once the switch is confirmed, data->count is the whole count. */
	if ((ptr & __PERCPU_REF_ATOMIC) && !ref->data->confirm_switch)
		return (long)count;
	if (percpu_count)
		for_each_possible_cpu(cpu)
			count += *per_cpu_ptr(percpu_count, cpu);
	return (long)(count - DAXDIFF_PERCPU_COUNT_BIAS);
}

static int read_pgmap_refs(void *arg)
{
	struct reading *r = arg;
	int i;

	for (i = 0; i < r->nr_pgmaps; i++)
		r->refs[i] = percpu_ref_count_stopped(&r->pgmaps[i]->ref) -
			     1; /* our own get_dev_pagemap() reference */
	return 0;
}

/*
 * The first pfn of a range whose struct page is valid: the altmap's reserved and free pfns
 * come first (the memmap lives there). This is vmem_altmap_offset(), which is an inline in
 * 6.12 and later but an unexported function in 6.1 (mm/memremap.c); the formula is the same.
 */
static unsigned long range_first_pfn(struct dev_pagemap *pgmap, int index)
{
	unsigned long pfn = PHYS_PFN(pgmap->ranges[index].start);
	struct vmem_altmap *altmap = pgmap_altmap(pgmap);

	if (index == 0 && altmap)
		pfn += altmap->reserve + altmap->free;
	return pfn;
}

static void count_pages(unsigned long first, unsigned long end, struct page_counts *c)
{
	unsigned long pfn;

	memset(c, 0, sizeof(*c));
	for (pfn = first; pfn < end; pfn++) {
		struct page *page = pfn_to_page(pfn);
		int n;

		c->pages++;
		if (PageTail(page)) {
			c->tails++;
			continue;
		}
		if (PageHead(page))
			c->compound++;
		n = page_ref_count(page);
		if (n < 0)
			c->neg++;
		else if (n == 0)
			c->ref0++;
		else if (n == 1)
			c->ref1++;
		else if (n == 2)
			c->ref2++;
		else
			c->ref3plus++;
		if (c->pages - c->tails == 1 || n > c->max)
			c->max = n;
		if (!(pfn % 4096))
			cond_resched();
	}
}

static void show_pgmap(struct seq_file *m, int ordinal, struct dev_pagemap *pgmap, long ref)
{
	int i;

	for (i = 0; i < pgmap->nr_range; i++) {
		const struct range *range = &pgmap->ranges[i];
		unsigned long first = range_first_pfn(pgmap, i);
		unsigned long end = PHYS_PFN(range->end) + 1;
		struct page_counts c;

		count_pages(first, end, &c);
		seq_printf(m,
			   "range pgmap=%d index=%d nr_range=%d type=%s start=%#llx end=%#llx first_pfn=%#lx pages=%lu ref=%ld",
			   ordinal, i, pgmap->nr_range, pgmap_type_name(pgmap),
			   (unsigned long long)range->start, (unsigned long long)range->end,
			   first, c.pages, ref);
		seq_printf(m,
			   " tails=%lu compound=%lu ref0=%lu ref1=%lu ref2=%lu ref3plus=%lu neg=%lu max=%d\n",
			   c.tails, c.compound, c.ref0, c.ref1, c.ref2, c.ref3plus, c.neg, c.max);
	}
}

static int refcounts_show(struct seq_file *m, void *unused)
{
	struct reading *r;
	int i;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	walk_iomem_res_desc(IORES_DESC_PERSISTENT_MEMORY, IORESOURCE_MEM, 0, U64_MAX, r,
			    add_region);
	walk_iomem_res_desc(IORES_DESC_PERSISTENT_MEMORY_LEGACY, IORESOURCE_MEM, 0, U64_MAX, r,
			    add_region);
	collect_pgmaps(r);
	stop_machine(read_pgmap_refs, r, NULL);

	seq_printf(m, "daxdiff-refcounts %d\n", DAXDIFF_FORMAT_VERSION);
	for (i = 0; i < r->nr_pgmaps; i++)
		show_pgmap(m, i, r->pgmaps[i], r->refs[i]);
	if (r->regions_truncated)
		seq_printf(m, "truncated regions=%d\n", MAX_REGIONS);
	if (r->pgmaps_truncated)
		seq_printf(m, "truncated pgmaps=%d\n", MAX_PGMAPS);

	for (i = 0; i < r->nr_pgmaps; i++)
		put_dev_pagemap(r->pgmaps[i]);
	kfree(r);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(refcounts);

static int __init daxdiff_probe_init(void)
{
	debugfs_dir = debugfs_create_dir("daxdiff", NULL);
	if (IS_ERR(debugfs_dir))
		return PTR_ERR(debugfs_dir);
	debugfs_create_file("refcounts", 0400, debugfs_dir, NULL, &refcounts_fops);
	return 0;
}

static void __exit daxdiff_probe_exit(void)
{
	debugfs_remove_recursive(debugfs_dir);
}

module_init(daxdiff_probe_init);
module_exit(daxdiff_probe_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("daxdiff: DAX dev_pagemap and page reference counts in debugfs");
