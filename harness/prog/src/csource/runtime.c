#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Runtime helpers a given reproducer may not need. */
#define RT static __attribute__((unused))

/*
 * Where the program's files live, set by the environment (repro.sh finds them):
 * DAXDIFF_EXT4_DIR / DAXDIFF_XFS_DIR: a directory on the ext4 / xfs DAX mount
 * DAXDIFF_EXT4_MNT, _DEV, _OPTS (and XFS_): that mount, its pmem device, its DAX mount option
 * DAXDIFF_DEVDAX: the device-dax character device; DAXDIFF_DEVDAX_NS, DAXDIFF_DEVDAX_ALIGN:
 * its namespace and alignment, for the namespace pseudo-calls.
 */
RT const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

RT const char *path_in(const char *dir_var, const char *dflt, const char *name)
{
	const char *dir = env_or(dir_var, dflt);
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (!p)
		return "";
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

RT const char *ext4_path(const char *name)
{
	return path_in("DAXDIFF_EXT4_DIR", "/mnt/ext4/daxdiff-repro", name);
}

RT const char *xfs_path(const char *name)
{
	return path_in("DAXDIFF_XFS_DIR", "/mnt/xfs/daxdiff-repro", name);
}

/* Device names in programs are generic (dax0.0): they stand for the device-dax device. */
RT const char *devdax_path(const char *name)
{
	if (strncmp(name, "dax", 3) == 0)
		return env_or("DAXDIFF_DEVDAX", "/dev/dax0.0");
	return path_in("DAXDIFF_DEV_DIR", "/dev", name);
}

/* The non-DAX ends of direct I/O: a directory on a file system without DAX, and a block
 * device (any name in the program stands for it). */
RT const char *nodax_path(const char *name)
{
	return path_in("DAXDIFF_NODAX_DIR", "/mnt/nodax/daxdiff-repro", name);
}

RT const char *blkdev_path(const char *name)
{
	(void)name;
	return env_or("DAXDIFF_BLKDEV", "/dev/vdb");
}

/* One line per finished call on stdout: "#<index> <name> = <ret>[ errno <n> (<NAME>)]". */
RT void report(int idx, const char *name, long ret, int err)
{
	if (err)
		dprintf(1, "#%d %s = %ld errno %d (%s)\n", idx, name, ret, err,
			strerrorname_np(err) ? strerrorname_np(err) : "?");
	else
		dprintf(1, "#%d %s = %ld\n", idx, name, ret);
}

/* Page-aligned anonymous memory patterned like the daxdiff executor's scratch buffers. */
RT unsigned long scratch(unsigned long len, unsigned char seed)
{
	unsigned long map_len = ((len ? len : 1) + 4095) / 4096 * 4096;
	unsigned char *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	for (unsigned long i = 0; i < map_len; i++)
		p[i] = (unsigned char)((unsigned char)i * 31 + seed);
	return (unsigned long)p;
}

RT unsigned long bytes_at(const unsigned char *b, unsigned long len)
{
	unsigned long p = scratch(len, 0);
	if (p)
		memcpy((void *)p, b, len);
	return p;
}

/* Calls on the second thread and barriers: which calls were handed over and which are done. */
RT pthread_mutex_t sync_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sync_cv = PTHREAD_COND_INITIALIZER;
RT char call_done[CALLS];
RT char call_handed[CALLS];

RT void mark(char *flags, int idx)
{
	pthread_mutex_lock(&sync_mu);
	flags[idx] = 1;
	pthread_cond_broadcast(&sync_cv);
	pthread_mutex_unlock(&sync_mu);
}

RT void wait_for(char *flags, int idx)
{
	pthread_mutex_lock(&sync_mu);
	while (!flags[idx])
		pthread_cond_wait(&sync_cv, &sync_mu);
	pthread_mutex_unlock(&sync_mu);
}

/* An administration command (daxctl, ndctl): its exit status, -1 ENOENT if it is missing. */
RT long admin(char *const argv[], int *err)
{
	pid_t pid;
	int status;
	int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		*err = ENOENT;
		return -1;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	*err = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

RT long evict(unsigned long mode, int *err)
{
	const char *fs = mode == 2 ? "EXT4" : "XFS";
	char var[32];
	*err = 0;
	if (mode == 1) {
		sync();
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
		if (fd < 0 || write(fd, "3", 1) != 1) {
			*err = errno;
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	if (mode != 2 && mode != 3) {
		*err = EINVAL;
		return -1;
	}
	snprintf(var, sizeof(var), "DAXDIFF_%s_MNT", fs);
	const char *mnt = getenv(var);
	snprintf(var, sizeof(var), "DAXDIFF_%s_DEV", fs);
	const char *dev = getenv(var);
	snprintf(var, sizeof(var), "DAXDIFF_%s_OPTS", fs);
	const char *opts = env_or(var, mode == 2 ? "dax" : "dax=always");
	if (!mnt || !dev) {
		*err = ENODEV;
		return -1;
	}
	if (umount2(mnt, 0) || mount(dev, mnt, mode == 2 ? "ext4" : "xfs", 0, opts)) {
		*err = errno;
		return -1;
	}
	return 0;
}

RT long devdax_toggle(const char *verb, int *err)
{
	const char *dev = env_or("DAXDIFF_DEVDAX", "/dev/dax0.0");
	const char *slash = strrchr(dev, '/');
	char *argv[] = {"daxctl", (char *)verb, (char *)(slash ? slash + 1 : dev), NULL};
	return admin(argv, err);
}

RT long ns_reconfigure(unsigned long mode, int *err)
{
	const char *ns = env_or("DAXDIFF_DEVDAX_NS", "namespace0.0");
	const char *align = env_or("DAXDIFF_DEVDAX_ALIGN", "2097152");
	const char *m = mode == 1 ? "devdax" : mode == 2 ? "fsdax" : mode == 3 ? "raw" : NULL;
	if (!m) {
		*err = EINVAL;
		return -1;
	}
	char *argv[] = {"ndctl", "create-namespace", "-f", "-e", (char *)ns, "-m", (char *)m,
			mode == 1 ? "-a" : NULL, (char *)align, NULL};
	return admin(argv, err);
}

/* Children of daxdiff_fork_touch that hold their mapping until daxdiff_wait kills them. */
RT pid_t holders[CALLS];

RT long fork_touch(unsigned long addr, unsigned long len, unsigned long mode, long *child,
		       int *err)
{
	*err = 0;
	if (mode < 1 || mode > 3) {
		*err = EINVAL;
		return -1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (unsigned long off = 0; off < len; off += 4096) {
			volatile unsigned char *p = (volatile unsigned char *)(addr + off);
			if (mode == 1)
				(void)*p;
			else
				*p = *p ^ 0x5a;
		}
		if (mode == 3)
			for (;;)
				pause();
		_exit(0);
	}
	if (pid < 0) {
		*err = errno;
		return -1;
	}
	if (mode == 3)
		for (int i = 0; i < CALLS; i++)
			if (!holders[i]) {
				holders[i] = pid;
				break;
			}
	*child = pid;
	return 0;
}

RT long wait_child(long pid, int *err)
{
	int status = 0;
	for (int i = 0; i < CALLS; i++)
		if (pid && holders[i] == pid) {
			holders[i] = 0;
			kill(pid, SIGKILL);
		}
	long rc = waitpid(pid, &status, 0);
	*err = rc < 0 ? errno : 0;
	return rc < 0 ? -1 : status;
}

/* io_uring on raw system calls: one SQE submitted, its completion awaited. */
struct ring {
	int fd;
	unsigned char *sq, *cq;
	struct io_uring_sqe_raw *sqes;
	uint32_t sq_off[7], cq_off[7];
	uint64_t next_user_data;
	/* Requests started without waiting, and how many of them have completed. */
	unsigned long in_flight, landed;
};

/* user_data of requests started without waiting. */
#define RING_ASYNC (1ull << 63)

struct io_uring_sqe_raw {
	uint8_t opcode, flags;
	uint16_t ioprio;
	int32_t fd;
	uint64_t off, addr;
	uint32_t len, rw_flags;
	uint64_t user_data;
	uint16_t buf_index, personality;
	int32_t splice_fd_in;
	uint64_t addr3, pad2;
};

struct io_uring_params_raw {
	uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
	uint32_t resv[3];
	uint32_t sq_off[8]; /* head tail ring_mask ring_entries flags dropped array resv1 */
	uint64_t sq_user_addr;
	uint32_t cq_off[8]; /* head tail ring_mask ring_entries overflow cqes flags resv1 */
	uint64_t cq_user_addr;
};

enum { OFF_HEAD, OFF_TAIL, OFF_MASK, OFF_ENTRIES, OFF_SQ_ARRAY = 6, OFF_CQES = 5 };

RT pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;

RT long ring_setup(struct ring *r, unsigned long entries, int *err)
{
	struct io_uring_params_raw p;
	memset(&p, 0, sizeof(p));
	long fd = syscall(__NR_io_uring_setup, entries, &p);
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	size_t sq_len = p.sq_off[OFF_SQ_ARRAY] + p.sq_entries * 4;
	size_t cq_len = p.cq_off[OFF_CQES] + p.cq_entries * 16;
	int single = p.features & 1; /* IORING_FEAT_SINGLE_MMAP */
	void *sq = mmap(NULL, single && cq_len > sq_len ? cq_len : sq_len, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_POPULATE, fd, 0);
	void *cq = single ? sq
			  : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
				 fd, 0x8000000);
	void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe_raw),
			  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0x10000000);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
		*err = errno;
		close(fd);
		return -1;
	}
	r->fd = fd;
	r->sq = sq;
	r->cq = cq;
	r->sqes = sqes;
	memcpy(r->sq_off, p.sq_off, sizeof(r->sq_off));
	memcpy(r->cq_off, p.cq_off, sizeof(r->cq_off));
	r->next_user_data = 1;
	r->in_flight = r->landed = 0;
	*err = 0;
	return fd;
}

#define RING_U32(base, off) ((uint32_t *)((base) + (off)))

/* Returns the CQE result (negative errno), or -1 with *err set when the ring itself failed. */
RT long ring_submit(struct ring *r, struct io_uring_sqe_raw sqe, int *err)
{
	*err = 0;
	if (!r->sq) {
		*err = EBADF;
		return -1;
	}
	pthread_mutex_lock(&ring_mu);
	uint64_t ud = r->next_user_data++;
	sqe.user_data = ud;
	uint32_t tail = __atomic_load_n(RING_U32(r->sq, r->sq_off[OFF_TAIL]), __ATOMIC_ACQUIRE);
	uint32_t idx = tail & *RING_U32(r->sq, r->sq_off[OFF_MASK]);
	r->sqes[idx] = sqe;
	RING_U32(r->sq, r->sq_off[OFF_SQ_ARRAY])[idx] = idx;
	__atomic_store_n(RING_U32(r->sq, r->sq_off[OFF_TAIL]), tail + 1, __ATOMIC_RELEASE);
	unsigned to_submit = 1;
	long res = 0;
	for (;;) {
		uint32_t *head = RING_U32(r->cq, r->cq_off[OFF_HEAD]);
		uint32_t ctail = __atomic_load_n(RING_U32(r->cq, r->cq_off[OFF_TAIL]), __ATOMIC_ACQUIRE);
		uint32_t mask = *RING_U32(r->cq, r->cq_off[OFF_MASK]);
		uint32_t h = *head;
		int found = 0;
		for (; h != ctail; h++) {
			unsigned char *cqe = r->cq + r->cq_off[OFF_CQES] + (h & mask) * 16;
			uint64_t cud;
			int32_t cres;
			memcpy(&cud, cqe, 8);
			memcpy(&cres, cqe + 8, 4);
			if (cud & RING_ASYNC)
				r->landed++;
			if (cud == ud) {
				res = cres;
				found = 1;
			}
		}
		__atomic_store_n(head, h, __ATOMIC_RELEASE);
		if (found)
			break;
		long rc = syscall(__NR_io_uring_enter, r->fd, to_submit, 1, 1 /* GETEVENTS */, NULL, 0);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			*err = errno;
			res = -1;
			break;
		}
		if ((unsigned)rc >= to_submit)
			to_submit = 0;
	}
	pthread_mutex_unlock(&ring_mu);
	return res;
}

/* Starts one read or write and returns 0 once the kernel took it, without waiting. */
RT long ring_start(struct ring *r, unsigned long op, unsigned long fd, unsigned long addr,
		   unsigned long len, unsigned long off, int *err)
{
	*err = 0;
	if (!r->sq) {
		*err = EBADF;
		return -1;
	}
	pthread_mutex_lock(&ring_mu);
	struct io_uring_sqe_raw sqe;
	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = op;
	sqe.fd = fd;
	sqe.addr = addr;
	sqe.len = len;
	sqe.off = off;
	sqe.user_data = RING_ASYNC | r->next_user_data++;
	uint32_t tail = __atomic_load_n(RING_U32(r->sq, r->sq_off[OFF_TAIL]), __ATOMIC_ACQUIRE);
	uint32_t idx = tail & *RING_U32(r->sq, r->sq_off[OFF_MASK]);
	r->sqes[idx] = sqe;
	RING_U32(r->sq, r->sq_off[OFF_SQ_ARRAY])[idx] = idx;
	__atomic_store_n(RING_U32(r->sq, r->sq_off[OFF_TAIL]), tail + 1, __ATOMIC_RELEASE);
	long rc;
	do
		rc = syscall(__NR_io_uring_enter, r->fd, 1, 0, 0, NULL, 0);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		*err = errno;
	else
		r->in_flight++;
	pthread_mutex_unlock(&ring_mu);
	return rc < 0 ? -1 : 0;
}

/* Waits for every request started with ring_start; returns how many there were. */
RT long ring_wait(struct ring *r, int *err)
{
	*err = 0;
	if (!r->sq) {
		*err = EBADF;
		return -1;
	}
	pthread_mutex_lock(&ring_mu);
	for (;;) {
		uint32_t *head = RING_U32(r->cq, r->cq_off[OFF_HEAD]);
		uint32_t ctail = __atomic_load_n(RING_U32(r->cq, r->cq_off[OFF_TAIL]), __ATOMIC_ACQUIRE);
		uint32_t mask = *RING_U32(r->cq, r->cq_off[OFF_MASK]);
		uint32_t h = *head;
		for (; h != ctail; h++) {
			uint64_t cud;
			memcpy(&cud, r->cq + r->cq_off[OFF_CQES] + (h & mask) * 16, 8);
			if (cud & RING_ASYNC)
				r->landed++;
		}
		__atomic_store_n(head, h, __ATOMIC_RELEASE);
		if (r->landed >= r->in_flight)
			break;
		long rc = syscall(__NR_io_uring_enter, r->fd, 0, 1, 1 /* GETEVENTS */, NULL, 0);
		if (rc < 0 && errno != EINTR) {
			*err = errno;
			pthread_mutex_unlock(&ring_mu);
			return -1;
		}
	}
	long n = r->in_flight;
	r->in_flight = r->landed = 0;
	pthread_mutex_unlock(&ring_mu);
	return n;
}

/* Linux AIO on raw system calls: requests started, counted per context, waited for later. */
struct aio_iocb {
	uint64_t data;
	uint32_t key, rw_flags;
	uint16_t opcode;
	int16_t reqprio;
	uint32_t fd;
	uint64_t buf, nbytes;
	int64_t offset;
	uint64_t reserved2;
	uint32_t flags, resfd;
};

struct aio_event {
	uint64_t data, obj;
	int64_t res, res2;
};

#define AIO_CTXS 16
RT unsigned long aio_ctx[AIO_CTXS], aio_in_flight[AIO_CTXS];
RT pthread_mutex_t aio_mu = PTHREAD_MUTEX_INITIALIZER;

RT long aio_setup(unsigned long nr, unsigned long *ctx, int *err)
{
	unsigned long c = 0;
	long rc = syscall(__NR_io_setup, nr, &c);
	*err = rc < 0 ? errno : 0;
	if (rc < 0)
		return -1;
	*ctx = c;
	pthread_mutex_lock(&aio_mu);
	for (int i = 0; i < AIO_CTXS; i++)
		if (!aio_ctx[i]) {
			aio_ctx[i] = c;
			aio_in_flight[i] = 0;
			break;
		}
	pthread_mutex_unlock(&aio_mu);
	return 0;
}

RT unsigned long *aio_count(unsigned long ctx)
{
	for (int i = 0; i < AIO_CTXS; i++)
		if (ctx && aio_ctx[i] == ctx)
			return &aio_in_flight[i];
	return NULL;
}

RT long aio_start(unsigned long ctx, unsigned long op, unsigned long fd, unsigned long buf,
		  unsigned long len, unsigned long off, int *err)
{
	struct aio_iocb cb;
	memset(&cb, 0, sizeof(cb));
	cb.opcode = op;
	cb.fd = fd;
	cb.buf = buf;
	cb.nbytes = len;
	cb.offset = off;
	struct aio_iocb *cbs[1] = {&cb};
	long rc;
	do
		rc = syscall(__NR_io_submit, ctx, 1, cbs);
	while (rc < 0 && errno == EINTR);
	*err = rc < 0 ? errno : 0;
	if (rc < 0)
		return -1;
	pthread_mutex_lock(&aio_mu);
	unsigned long *n = aio_count(ctx);
	if (n)
		(*n)++;
	pthread_mutex_unlock(&aio_mu);
	return 0;
}

RT long aio_wait(unsigned long ctx, int *err)
{
	pthread_mutex_lock(&aio_mu);
	unsigned long *n = aio_count(ctx);
	unsigned long want = n ? *n : 0;
	unsigned long got = 0;
	*err = 0;
	while (got < want) {
		struct aio_event ev[16];
		long rc = syscall(__NR_io_getevents, ctx, 1, 16, ev, NULL);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			*err = errno;
			break;
		}
		got += rc;
	}
	if (n)
		*n = 0;
	pthread_mutex_unlock(&aio_mu);
	if (*err)
		return -1;
	if (!n) {
		/* Not a context of ours: let the kernel say what it makes of it. */
		struct aio_event ev;
		struct timespec zero = {0, 0};
		long rc = syscall(__NR_io_getevents, ctx, 0, 1, &ev, &zero);
		*err = rc < 0 ? errno : 0;
		return rc < 0 ? -1 : 0;
	}
	return got;
}

/* A CQE result as a call result: -1 and the errno when negative. */
RT long cqe_result(long res, int *err)
{
	if (*err)
		return -1;
	if (res < 0) {
		*err = -res;
		return -1;
	}
	return res;
}

RT long ring_rw(struct ring *r, unsigned long op, unsigned long fd, unsigned long buf_index,
		    unsigned long addr, unsigned long len, unsigned long off, int *err)
{
	struct io_uring_sqe_raw sqe;
	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = op;
	sqe.fd = fd;
	sqe.buf_index = buf_index;
	sqe.addr = addr;
	sqe.len = len;
	sqe.off = off;
	long res = ring_submit(r, sqe, err);
	return cqe_result(res, err);
}

RT long ring_update_buffers(struct ring *r, unsigned long offset, unsigned long iov,
				unsigned long nr, int *err)
{
	struct {
		uint32_t offset, resv;
		uint64_t data, tags;
		uint32_t nr, resv2;
	} upd = {offset, 0, iov, 0, nr, 0};
	if (!r->sq) {
		*err = EBADF;
		return -1;
	}
	long rc = syscall(__NR_io_uring_register, r->fd, 16 /* BUFFERS_UPDATE */, &upd, sizeof(upd));
	*err = rc < 0 ? errno : 0;
	return rc;
}

RT void prepare(void)
{
	/* Root may pin any amount: buffer registration fails for DAX reasons, not accounting. */
	struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
}
