// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
//
// tillwatch kernel tripwires. Syscall and sched tracepoints only: they load
// where BPF LSM, fentry and kprobes are refused. Every map and link is pinned
// by the loader, so the tripwires keep acting while the sensor is dead.
//
// Contexts are declared by hand from
// /sys/kernel/tracing/events/{syscalls,sched}/*/format (no vmlinux.h).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

// __verified_once marks a global (non-static, never inlined) function: the
// kernel's verifier checks it once per program, on its own, with its
// arguments taken for any value, and its callers only against its
// prototype. Each path tripwire and each path loop is one: inlined, the
// verifier walked the same loops once per call site and per state the
// caller reached them in (a rename reads its two names seven times), and
// a first start spent 11-17 s in it (docs/kernel.md, "Start-up").
// Arguments are scalars (a user pointer as a __u64); the per-CPU scratch
// element is looked up again inside.
#define __verified_once __attribute__((noinline))

#define SIGKILL 9
#define SIGSTOP 19

#define PATH_LEN 256  // bytes of a path in an exec record (power of two)
// Bytes of a path read at a syscall for the file tripwires: the kernel's
// PATH_MAX, so every path a syscall accepts is read whole (a longer one
// fails with ENAMETOOLONG). A shorter read let a path padded past it
// ("dir/././.../decoy") reach a decoy or the sensor's files unseen.
#define SCRATCH_LEN 4096
#define KEY_LEN 64    // bytes of a name or argument compared in a map
#define ARGS_LEN 4096 // bytes of argv packed into one exec record
#define ARG_MAX 256   // bytes of one argument in that record
#define MAX_ARGS 64   // arguments read from argv

// Record types on the rings (struct hdr.type).
#define REC_EXEC_ARGS 1 // sys_enter_execve(at): what the caller asked to run
#define REC_EXEC 2      // sched_process_exec: the exec succeeded
#define REC_FORK 3      // sched_process_fork
#define REC_EXIT 4      // sched_process_exit of a thread-group leader
#define REC_TAMPER 5    // a tripwire on the sensor fired
#define REC_STOP 6      // a tripwire stopped a process (decoy, burst, fresh exec)

// Reasons (struct tamper_rec.reason, struct stop_val.reason).
#define WHY_SIGNAL 1      // signalled a protected process
#define WHY_EXEC_TOOL 2   // exec of a tamper tool naming the sensor
#define WHY_HOSTILE 3     // member of a hostile family made a syscall
#define WHY_PATH 4        // wrote, renamed or unlinked a protected path
#define WHY_PIDFD 5       // opened a pidfd on a protected process
// 6 is the sensor's own (a hostile family nobody reported: reasonUnreported)
#define WHY_REACH 7       // ptrace attach, memory write or resource limit on a protected process
#define WHY_BPF 8         // took a handle on a loaded BPF object (the tripwires are ones)
#define WHY_DECOY_OPEN 16 // opened a decoy for writing
#define WHY_DECOY_RENAME 17
#define WHY_DECOY_UNLINK 18
#define WHY_DECOY_LINK 19
#define WHY_BURST 20      // crossed the burst threshold of file changes (or its family did)
#define WHY_HANDLE_WRITE 21 // a tainted process opened a file by handle for writing
#define WHY_IO_URING 22     // a tainted process made an io_uring call
#define WHY_FRESH_EXEC 32 // a tainted process exec'd a file its tree just wrote
#define WHY_FRESH_HANDOFF 33 // a process outside the tainted trees exec'd a file one of them just wrote

// Taint flags (struct taint.flags).
#define TAINT_AGENT 1 // the RMM agent itself, marked by the sensor

// Config flags (config[0].flags).
#define CFG_ENFORCE 1 // kill and stop; without it, only report
#define CFG_DECOYS 2  // decoy tripwires armed
#define CFG_OFF 4     // the operator's clean stop: every tripwire disarmed
#define CFG_FRESH 8   // fresh-exec tripwire armed

// Rings, as indexes of ring_drops.
#define RING_PROC 0
#define RING_TAMPER 1

// How a fresh file was made (struct fresh_val.how).
#define FRESH_WRITE 1  // opened for writing (O_CREAT, O_TRUNC, O_WRONLY, O_RDWR)
#define FRESH_RENAME 2 // renamed into place
#define FRESH_CHMOD 4  // made executable

// A file is fresh this long after a tainted process wrote it.
#define FRESH_NS (300ULL * 1000000000ULL)
#define CFG_BURST 16  // burst tripwire armed (thresholds in burst_cfg)
#define CFG_URING 32  // io_uring tripwire armed
// The sensor stopped at the asking of a process under an agent: the decoy
// and burst tripwires act on tainted processes only, so the attacker's
// tree stays held and the operator's own work is not stopped with no
// sensor to judge it.
#define CFG_TAINTED_ONLY 64

#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct config {
	__u32 flags;
	__u32 _pad;
};

struct taint {
	__u32 family; // pid of the agent's child that started this tree; 0 for the agent
	__u32 flags;  // TAINT_*
};

#define TAINT_AGENT 1   // the agent itself (set by the sensor)
#define TAINT_HANDOFF 2 // started by a service manager on a tree's behalf (see handoff)

// How long after a tainted process ran a spawner (systemd-run, run0, ...)
// what a service manager forks is taken for its doing.
#define HANDOFF_NS (2ULL * 1000000000ULL)

struct key {
	char s[KEY_LEN];
};

struct stop_val {
	__u64 ktime;
	__u32 reason;
	__u32 family; // burst: the ancestor whose family crossed (0: the process itself)
	char name[KEY_LEN];
	__u32 held[2]; // family roots this stop holds in burst_held (0: none)
};

struct hdr {
	__u32 type;
	__u32 pid; // thread-group id of the process the record is about
	__u32 tid;
	__u32 uid;
	__u64 ktime; // CLOCK_MONOTONIC ns
};

struct exec_args_rec {
	struct hdr h;
	__u32 argc;     // arguments stored
	__u32 args_len; // bytes used in args, NUL-separated
	__u32 truncated;
	__u32 _pad;
	char filename[PATH_LEN];
	char args[ARGS_LEN + ARG_MAX];
};

struct exec_rec {
	struct hdr h;
	__u32 old_tid; // the thread that called execve
	__u32 _pad;
	char filename[PATH_LEN];
};

struct fork_rec {
	struct hdr h; // pid: the parent's thread-group id
	__u32 child;  // the new task (a process or a thread)
	__u32 _pad;
};

#define EXIT_UNKNOWN 0xffffffff // exit_rec.code when the kernel has no BTF

struct exit_rec {
	struct hdr h;
	__u32 code; // wait status: exit code << 8, or the killing signal; or EXIT_UNKNOWN
	__u32 _pad;
};

struct tamper_rec {
	struct hdr h;
	__u32 reason;
	__u32 target; // the pid signalled, or 0
	__u32 sig;
	__u32 family;
	char name[KEY_LEN]; // the tool, the path, or the target argument
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct taint);
} taint SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   // family
	__type(value, __u64); // ktime it was declared hostile
} hostile SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // task id (the sensor's threads inherit at fork)
	__type(value, __u32);
} protected_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct key); // basename of a tamper tool
	__type(value, __u32);
} tools SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct key); // a name, path or pid string that means the sensor
	__type(value, __u32);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct key); // basename of a decoy
	__type(value, __u32);
} decoys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // thread-group id stopped by a tripwire
	__type(value, struct stop_val);
} stopped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} proc_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} tamper_events SEC(".maps");

// fresh: files a tainted process wrote, renamed into place or made
// executable, by basename (what execve's filename can be matched by). The
// kernel's match is coarse; the sensor confirms the file before judging.
struct fresh_val {
	__u64 ktime;     // last write, rename or chmod
	__u32 writer;    // thread-group id that wrote it (or renamed/chmodded it, if no write was seen)
	__u32 family;    // the writer's taint family
	__u32 how;       // FRESH_* bits
	__u32 _pad;
	char comm[16];   // the writer's comm at the write
	__u64 ino;       // the file's inode number, from the write-open's descriptor (0: not seen)
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct key); // basename
	__type(value, struct fresh_val);
} fresh SEC(".maps");

// managers: the service managers (pid 1; a test's stand-in) whose
// children a spawner's hand-off reaches.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} managers SEC(".maps");

// handoff: the last exec of a spawner (a tamper tool whose tools value is
// TOOL_SPAWNER) by a tainted process: what a manager forks within
// HANDOFF_NS joins that family, so `systemd-run sh -c '...'` (a command
// line, no file the fresh-exec tripwire could see) stays tainted.
struct handoff_val {
	__u64 ktime;
	__u32 family;
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handoff_val);
} handoff SEC(".maps");

#define TOOL_SPAWNER 2 // tools value of a program that has a manager start a command

// ring_drops counts records the kernel could not put in a ring (reserve
// failed: the ring was full), per CPU, indexed by RING_*.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} ring_drops SEC(".maps");

// proc_woken: when the process ring's reader was last woken (ktime ns).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} proc_woken SEC(".maps");
// Burst tripwire state. Families: the kernel keeps each task's parent from
// fork (parent_of) and counts every write-open, rename and unlink of a
// process for itself, its parent and its grandparent, so a thousand one-file
// workers (xargs -> sh -> openssl) add up at the spawner two levels up.
struct burst_cfg {
	__u32 threshold; // changes within window_ns that stop the caller; 0: off
	__u32 nroots;    // guarded roots in use (roots[0:nroots])
	__u64 window_ns;
	__u32 nids; // guarded roots' identities in burst_root_ids (0: relative paths not counted)
	__u32 _pad;
};

// A directory's identity: its inode number and its superblock's device
// (the kernel's dev_t, MAJOR << 20 | MINOR, as /proc/self/mountinfo shows
// it, not stat's encoding).
struct root_id {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

struct burst_root {
	__u32 len; // bytes of prefix, no trailing slash; 0: unused
	__u32 _pad;
	char prefix[KEY_LEN];
};

struct burst_count {
	__u64 start; // ktime the window started
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct burst_cfg);
} burst_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct burst_root);
} burst_roots SEC(".maps");

// burst_root_ids: the guarded roots by identity, for relative paths: the
// directory a relative path starts from is walked up its d_parent chain and
// each level looked up here.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, struct root_id);
	__type(value, __u32); // index of the root in burst_roots
} burst_root_ids SEC(".maps");

// burst_above: the directories above the guarded roots by identity, for a
// relative path that starts above a root and names its way down into it
// (`cd /shop && encrypt data/*`): off[i] is where, in burst_roots[i]'s
// prefix, the part below this directory starts (0: not above root i).
struct above_val {
	__u8 off[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, struct root_id);
	__type(value, struct above_val);
} burst_above SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   // task id
	__type(value, __u32); // the thread-group id that forked it
} parent_of SEC(".maps");

// decoy_ids: the planted decoys by identity (inode number and superblock
// device), for open_by_handle_at(2), which names no path: the value is the
// decoy's basename, what a decoy stop is named by.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct root_id);
	__type(value, struct key);
} decoy_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); // thread-group id (itself, or as parent or grandparent)
	__type(value, struct burst_count);
} burst_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   // thread-group id the sensor judged honest
	__type(value, __u64); // ktime until which it is not counted
} burst_allowed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   // family root held by a burst stop until judged
	__type(value, __u64); // ktime
} burst_held SEC(".maps");

// Per-CPU room to build an exec request in: the ring gets only the part
// of the argv area in use (see emit_exec_args).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_args_rec);
} args_scratch SEC(".maps");

// Scratch space: a path and two keys per CPU, too big for the 512-byte stack.
struct scratch {
	char path[SCRATCH_LEN + KEY_LEN]; // padded so a basename copy stays inside
	struct key k;
	struct key base;
	__u16 up[SCRATCH_LEN / 2]; // lexical_path: where each component starts
	__s32 lex_o, lex_start, lex_depth; // lex_step's state (see there)
	__s32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

// The fields of the kernel's structures the programs read, relocated
// against the running kernel's BTF (CO-RE) when the object is loaded: the
// exit code, and what places a relative path (the working directory, the
// file behind a directory descriptor, a dentry's parent and identity).
// Declared by hand, as the tracepoint contexts are: a generated vmlinux.h
// would be 100,000 lines of one build's kernel in the tree for 11 fields.
struct super_block {
	__u32 s_dev; // dev_t
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));

struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
	struct super_block *d_sb;
} __attribute__((preserve_access_index));

struct vfsmount {
	struct dentry *mnt_root;
} __attribute__((preserve_access_index));

// The kernel's own struct mount around a vfsmount (fs/mount.h): how a
// walk up the tree crosses from a mounted filesystem's root to the folder
// it is mounted on.
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __attribute__((preserve_access_index));

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct fs_struct {
	struct path pwd;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
	unsigned int f_mode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	int exit_code;
	struct fs_struct *fs;
	struct files_struct *files;
} __attribute__((preserve_access_index));

#define AT_FDCWD -100
// Directory levels walked up from where a relative path starts. 64 let a
// process 65 levels down a guarded root write there with relative names
// uncounted; a walk costs what the directory's depth is, so honest
// processes (a few levels deep) pay nothing for the bound. A working
// directory deeper than this below a guarded root is still not found (a
// documented limit: chdir one level at a time reaches any depth; counted
// for a tainted caller, see relative_in_root).
#define WALK_MAX 2048

// Tracepoint contexts (offsets from the format files; 8 common bytes first).
struct tp_execve {
	__u64 common;
	__u64 nr;
	const char *filename;
	const char *const *argv;
	const char *const *envp;
};

struct tp_execveat {
	__u64 common;
	__u64 nr;
	__u64 fd;
	const char *filename;
	const char *const *argv;
	const char *const *envp;
	__u64 flags;
};

struct tp_kill {
	__u64 common;
	__u64 nr;
	__s64 pid;
	__u64 sig;
};

struct tp_tgkill {
	__u64 common;
	__u64 nr;
	__s64 tgid;
	__s64 pid;
	__u64 sig;
};

struct tp_sigqueueinfo { // rt_sigqueueinfo
	__u64 common;
	__u64 nr;
	__u64 pid;
	__u64 sig;
	__u64 uinfo;
};

struct tp_tgsigqueueinfo { // rt_tgsigqueueinfo
	__u64 common;
	__u64 nr;
	__u64 tgid;
	__u64 pid;
	__u64 sig;
	__u64 uinfo;
};

struct tp_pid_first { // ptrace's second, process_vm_writev's and prlimit64's first argument
	__u64 common;
	__u64 nr;
	__u64 a0;
	__u64 a1;
	__u64 a2;
};

struct tp_signal_generate { // signal:signal_generate
	__u64 common;
	int sig;
	int errno_;
	int code;
	char comm[16];
	int pid; // the task the signal is for
	int group;
	int result;
};

struct tp_pidfd_open {
	__u64 common;
	__u64 nr;
	__s64 pid;
	__u64 flags;
};

struct tp_openat {
	__u64 common;
	__u64 nr;
	__u64 dfd;
	const char *filename;
	__u64 flags;
	__u64 mode;
};

struct tp_path1 { // unlink, unlinkat's pathname after dfd: see below
	__u64 common;
	__u64 nr;
	const char *path;
};

struct tp_dfd_path { // unlinkat, fchmodat
	__u64 common;
	__u64 nr;
	__u64 dfd;
	const char *path;
	__u64 flag;
};

struct tp_renameat { // renameat, renameat2, linkat
	__u64 common;
	__u64 nr;
	__u64 olddfd;
	const char *oldname;
	__u64 newdfd;
	const char *newname;
	__u64 flags;
};

struct tp_rename { // rename, link
	__u64 common;
	__u64 nr;
	const char *oldname;
	const char *newname;
};

struct tp_chmod { // chmod
	__u64 common;
	__u64 nr;
	const char *path;
	__u64 mode;
};

struct tp_fchmodat { // fchmodat, fchmodat2
	__u64 common;
	__u64 nr;
	__u64 dfd;
	const char *path;
	__u64 mode;
};

struct tp_open {
	__u64 common;
	__u64 nr;
	const char *filename;
	__u64 flags;
	__u64 mode;
};

struct tp_openat2 {
	__u64 common;
	__u64 nr;
	__u64 dfd;
	const char *filename;
	const void *how; // struct open_how *
	__u64 usize;
};

struct tp_creat {
	__u64 common;
	__u64 nr;
	const char *path;
	__u64 mode;
};

struct tp_truncate {
	__u64 common;
	__u64 nr;
	const char *path;
	__u64 length;
};

struct tp_open_by_handle_at {
	__u64 common;
	__u64 nr;
	__u64 mountdirfd;
	const void *handle; // struct file_handle *
	__u64 flags;
};

struct tp_write {
	__u64 common;
	__u64 nr;
	__u64 fd;
	const char *buf;
	__u64 count;
};

struct tp_sched_fork {
	__u64 common;
	__u32 parent_comm_loc;
	__s32 parent_pid;
	__u32 child_comm_loc;
	__s32 child_pid;
};

struct tp_sched_exec {
	__u64 common;
	__u32 filename_loc; // __data_loc: low 16 bits offset, high 16 bits length
	__s32 pid;
	__s32 old_pid;
};

struct tp_sched_exit {
	__u64 common;
	char comm[16];
	__s32 pid;
	__s32 prio;
	__u8 group_dead;
};

// proc_wake batches the process ring's wake-ups: the reader is woken by
// the first record after WAKE_NS without a wake-up, or once a batch of
// WAKE_BYTES waits, instead of once per record, which cost an exec storm a
// context switch per exec. The records between two wake-ups are picked up
// by the reader's short polls that follow a wake-up (feed_linux.go); an
// idle reader sleeps until the next record, with no timer.
#define WAKE_BYTES (256 << 10)
#define WAKE_NS (10 * 1000 * 1000)
static __always_inline __u64 proc_wake(void)
{
	if (bpf_ringbuf_query(&proc_events, BPF_RB_AVAIL_DATA) >= WAKE_BYTES)
		return BPF_RB_FORCE_WAKEUP;
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&proc_woken, &zero);
	if (!last)
		return BPF_RB_FORCE_WAKEUP;
	__u64 now = bpf_ktime_get_ns();
	if (now - *last < WAKE_NS)
		return BPF_RB_NO_WAKEUP;
	// Racy across CPUs: two of them may both wake the reader, which is
	// harmless.
	*last = now;
	return BPF_RB_FORCE_WAKEUP;
}

// ring_drop counts one record lost to a full ring.
static __always_inline void ring_drop(__u32 ring)
{
	__u64 *n = bpf_map_lookup_elem(&ring_drops, &ring);
	if (n)
		*n += 1;
}

static __always_inline __u32 cfg_flags(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	return c ? c->flags : 0;
}

static __always_inline void fill_hdr(struct hdr *h, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	h->type = type;
	h->pid = id >> 32;
	h->tid = (__u32)id;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->ktime = bpf_ktime_get_ns();
}

static __always_inline void report(__u32 reason, __u32 target, __u32 sig, __u32 family, const char *name)
{
	struct tamper_rec *r = bpf_ringbuf_reserve(&tamper_events, sizeof(*r), 0);
	if (!r) {
		ring_drop(RING_TAMPER);
		return;
	}
	fill_hdr(&r->h, REC_TAMPER);
	r->reason = reason;
	r->target = target;
	r->sig = sig;
	r->family = family;
	__builtin_memset(r->name, 0, sizeof(r->name));
	if (name)
		bpf_probe_read_kernel_str(r->name, sizeof(r->name), name);
	bpf_ringbuf_submit(r, 0);
}

// family_of returns the caller's taint, or NULL when it is not tainted.
static __always_inline struct taint *taint_of_current(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&taint, &tgid);
}

// poison declares the caller's family hostile and kills the caller. The
// agent itself (family 0) is killed but its other sessions are spared.
static __always_inline void poison(struct taint *t, __u32 flags)
{
	if (!(flags & CFG_ENFORCE))
		return;
	if (t->family) {
		__u64 now = bpf_ktime_get_ns();
		bpf_map_update_elem(&hostile, &t->family, &now, BPF_ANY);
	}
	bpf_send_signal(SIGKILL);
}

// hostile_check kills the caller if its family was declared hostile: the
// rest of a tree that attacked the sensor dies at its next syscall of
// interest, even while the sensor is down. Returns 1 if it did.
static __always_inline int hostile_check(__u32 flags)
{
	if (flags & CFG_OFF)
		return 0;
	struct taint *t = taint_of_current();
	if (!t || !t->family)
		return 0;
	if (!bpf_map_lookup_elem(&hostile, &t->family))
		return 0;
	if (flags & CFG_ENFORCE)
		bpf_send_signal(SIGKILL);
	return 1;
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

struct slash_ctx {
	struct scratch *sc;
	int len;
	int start;
};

static long slash_step(__u32 i, void *data)
{
	struct slash_ctx *c = data;
	if ((int)i >= c->len)
		return 1;
	if (c->sc->path[i & (SCRATCH_LEN - 1)] == '/')
		c->start = i + 1;
	return 0;
}

// base_key fills sc->base with the basename of sc->path[0:len), cut to
// KEY_LEN-1 bytes and zero-filled, so it compares equal as a map key. The
// scan runs in bpf_loop so the verifier checks its body once, not per byte.
static __always_inline void base_key(struct scratch *sc, int len)
{
	struct slash_ctx c = {.sc = sc, .len = len, .start = 0};
	bpf_loop(SCRATCH_LEN, slash_step, &c, 0);
	__builtin_memset(sc->base.s, 0, KEY_LEN);
	if (len - c.start < KEY_LEN)
		bpf_probe_read_kernel_str(sc->base.s, KEY_LEN, &sc->path[c.start & (SCRATCH_LEN - 1)]);
}

// read_path reads a user path into sc->path and fills sc->k (the whole path,
// cut to KEY_LEN-1 bytes) and sc->base (its basename). Returns the length
// read including the NUL, or <= 0.
__verified_once int read_path(__u64 p)
{
	struct scratch *sc = get_scratch();
	if (!sc)
		return 0;
	int n = bpf_probe_read_user_str(sc->path, SCRATCH_LEN, (const void *)p);
	if (n <= 0)
		return n;
	// A path longer than a key is never compared whole: cut, it would
	// match every path sharing its first bytes.
	__builtin_memset(sc->k.s, 0, KEY_LEN);
	if (n <= KEY_LEN)
		bpf_probe_read_kernel_str(sc->k.s, KEY_LEN, sc->path);
	base_key(sc, n - 1);
	return n;
}

// read_key reads a user string into sc->k, cut and zero-filled.
static __always_inline int read_key(struct scratch *sc, const char *p)
{
	__builtin_memset(sc->k.s, 0, KEY_LEN);
	int n = bpf_probe_read_user_str(sc->k.s, KEY_LEN, p);
	if (n == KEY_LEN) // cut: never compared, like read_path
		sc->k.s[0] = 0;
	return n;
}

// burst_up returns the process that forked pid (recorded at fork), never
// pid 1, kthreadd or the sensor: their children are not one family.
static __always_inline __u32 burst_up(__u32 pid)
{
	__u32 *p = bpf_map_lookup_elem(&parent_of, &pid);
	if (!p || *p <= 2)
		return 0;
	__u32 up = *p;
	if (bpf_map_lookup_elem(&protected_pids, &up))
		return 0;
	return up;
}

// families sets the family roots the caller (tgid) counts for: its tainted
// tree's root (under an RMM agent), else its parent and grandparent, the
// spawners of one-file workers (0 where there is none).
static __always_inline void families(__u32 tgid, __u32 *fam0, __u32 *fam1)
{
	*fam0 = 0;
	*fam1 = 0;
	struct taint *t = taint_of_current();
	if (t && t->family) {
		*fam0 = t->family;
		return;
	}
	*fam0 = burst_up(tgid);
	if (*fam0)
		*fam1 = burst_up(*fam0);
}

// stop_caller stops the calling process (tgid) for the sensor's judgement,
// the one sequence every stopping tripwire shares: recorded in stopped (what
// the sensor judges, and finds again after a restart), family roots held
// (hold0, hold1: a burst's crossing family root, a decoy stop's parent and
// grandparent; 0 for none) so the family's other workers stop at their next
// change in a guarded root, SIGSTOP in enforce mode, and a stop record on
// the tamper ring. root is the family root a burst was counted for (0: the
// process itself, or another tripwire). target and family go on the record
// only (fresh exec: the writer and the caller's taint family); name is a
// zero-filled key (a basename or a path).
static __always_inline void stop_caller(__u32 flags, __u32 tgid, __u64 now, __u32 reason, __u32 root,
					__u32 hold0, __u32 hold1, __u32 target, __u32 family,
					const struct key *name)
{
	struct stop_val v = {};
	v.ktime = now;
	v.reason = reason;
	v.family = root;
	v.held[0] = hold0;
	v.held[1] = hold1;
	__builtin_memcpy(v.name, name->s, KEY_LEN);
	bpf_map_update_elem(&stopped, &tgid, &v, BPF_ANY);
	if (hold0)
		bpf_map_update_elem(&burst_held, &hold0, &now, BPF_NOEXIST);
	if (hold1)
		bpf_map_update_elem(&burst_held, &hold1, &now, BPF_NOEXIST);
	if (flags & CFG_ENFORCE)
		bpf_send_signal(SIGSTOP);
	struct tamper_rec *r = bpf_ringbuf_reserve(&tamper_events, sizeof(*r), 0);
	if (!r) {
		ring_drop(RING_TAMPER);
		return;
	}
	fill_hdr(&r->h, REC_STOP);
	r->reason = reason;
	r->target = target;
	r->sig = SIGSTOP;
	r->family = family;
	__builtin_memcpy(r->name, v.name, KEY_LEN);
	bpf_ringbuf_submit(r, 0);
}

// decoy_check stops the caller when path names a decoy. With the burst
// tripwire armed its family (parent and grandparent, or tainted tree) is
// held too: a multi-worker encryptor's other workers stop at their next
// change in a guarded root, without waiting for the sensor (or while it is
// dead). A decoy stop judged a namesake releases them.
__verified_once int decoy_check(__u32 flags, __u64 path, __u32 why)
{
	if (!(flags & CFG_DECOYS) || (flags & CFG_OFF))
		return 0;
	if ((flags & CFG_TAINTED_ONLY) && !taint_of_current())
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (bpf_map_lookup_elem(&protected_pids, &tgid))
		return 0; // the sensor writes and restores its own decoys
	struct scratch *sc = get_scratch();
	if (!sc || read_path(path) <= 0)
		return 0;
	if (!bpf_map_lookup_elem(&decoys, &sc->base))
		return 0;
	__u32 fam0 = 0, fam1 = 0;
	if (flags & CFG_BURST)
		families(tgid, &fam0, &fam1);
	stop_caller(flags, tgid, bpf_ktime_get_ns(), why, 0, fam0, fam1, 0, 0, &sc->base);
	return 0;
}

// burst_allowed_now reports whether pid was judged honest and its leave
// (burst_allowed) has not run out.
static __always_inline int burst_allowed_now(__u32 pid, __u64 now)
{
	__u64 *until = bpf_map_lookup_elem(&burst_allowed, &pid);
	return until && *until > now;
}

// burst_bump counts one change for pid in its current window and returns
// the count. Not atomic: a lost count under a race only delays a stop.
static __always_inline __u64 burst_bump(__u32 pid, __u64 now, __u64 window)
{
	struct burst_count *c = bpf_map_lookup_elem(&burst_counts, &pid);
	if (!c) {
		struct burst_count n = {.start = now, .count = 1};
		bpf_map_update_elem(&burst_counts, &pid, &n, BPF_ANY);
		return 1;
	}
	if (now - c->start > window) {
		c->start = now;
		c->count = 0;
	}
	c->count++;
	return c->count;
}

struct root_ctx {
	struct scratch *sc;
	int hit;
};

static long root_step(__u32 i, void *data)
{
	struct root_ctx *c = data;
	__u32 k = i;
	struct burst_root *r = bpf_map_lookup_elem(&burst_roots, &k);
	if (!r)
		return 1;
	__u32 len = r->len;
	if (len == 0 || len >= KEY_LEN)
		return 0;
	for (int j = 0; j < KEY_LEN - 1; j++) {
		if (j >= len)
			break;
		if (c->sc->path[j] != r->prefix[j])
			return 0;
	}
	char next = c->sc->path[len & (SCRATCH_LEN - 1)];
	if (next == '/' || next == 0) {
		c->hit = 1;
		return 1;
	}
	return 0;
}

struct dots_ctx {
	struct scratch *sc;
	int start; // where the current component starts
	int depth; // levels below the starting directory so far
	int min;   // the fewest seen
	int dots;  // ".." components
	int lead;  // ".." components before the first name
	int name;  // where the first name starts; 0: none yet
};

static long dots_step(__u32 i, void *data)
{
	struct dots_ctx *c = data;
	char ch = c->sc->path[i & (SCRATCH_LEN - 1)];
	if (ch != '/' && ch != 0)
		return 0;
	int len = (int)i - c->start;
	char c0 = c->sc->path[c->start & (SCRATCH_LEN - 1)];
	char c1 = c->sc->path[(c->start + 1) & (SCRATCH_LEN - 1)];
	if (len == 2 && c0 == '.' && c1 == '.') {
		c->dots++;
		if (!c->name)
			c->lead++;
		c->depth--;
		if (c->depth < c->min)
			c->min = c->depth;
	} else if (len > 1 || (len == 1 && c0 != '.')) {
		c->depth++;
		// Offsets come from i, never counted up by steps: the verifier
		// then need not follow each iteration of the loop apart.
		if (!c->name)
			c->name = c->start + 1;
	}
	c->start = i + 1;
	return ch == 0;
}

// path_shape reads the relative path in sc->path component by component,
// taken as written (a symbolic link among them is not followed), and
// returns how many levels above its starting directory its ".." components
// reach ("a/../../b": 1); *dots is set to the number of ".." components,
// *lead to those before the first name, and *name to where the first name
// starts plus one (0: none), past the leading "/", "." and "..".
static __always_inline int path_shape(struct scratch *sc, int *dots, int *lead, int *name)
{
	struct dots_ctx c = {.sc = sc};
	bpf_loop(SCRATCH_LEN, dots_step, &c, 0);
	*dots = c.dots;
	*lead = c.lead;
	*name = c.name;
	return -c.min;
}

struct below_ctx {
	struct scratch *sc;
	struct above_val *above;
	int p;
	int hit;
};

static long below_step(__u32 i, void *data)
{
	struct below_ctx *c = data;
	__u32 k = i;
	struct burst_root *r = bpf_map_lookup_elem(&burst_roots, &k);
	if (!r)
		return 1;
	// i < 8 (the loop's count): the mask is for the verifier, and a test
	// of i here would let the compiler drop it.
	__u32 off = c->above->off[i & 7], len = r->len;
	if (off == 0 || off >= len || len >= KEY_LEN)
		return 0;
	for (int j = 0; j < KEY_LEN - 1; j++) {
		if (off + j >= len)
			break;
		if (c->sc->path[(c->p + j) & (SCRATCH_LEN - 1)] != r->prefix[(off + j) & (KEY_LEN - 1)])
			return 0;
	}
	char next = c->sc->path[(c->p + len - off) & (SCRATCH_LEN - 1)];
	if (next == '/' || next == 0) {
		c->hit = 1;
		return 1;
	}
	return 0;
}

// below_root reports whether the relative path in sc->path, starting at
// directory at (its leading ".." already climbed), names its way down into
// a guarded root: at is above root i (burst_above) and the path, past its
// leading "/", "./" and "../", begins with the rest of the root's prefix.
// Spelled as the prefix is: "data//x" counts, "./data/./x" too, but
// "da/../data/x" does not.
static __always_inline int below_root(struct scratch *sc, struct burst_cfg *bc, struct dentry *at, int p)
{
	struct root_id id = {};
	id.ino = BPF_CORE_READ(at, d_inode, i_ino);
	id.dev = BPF_CORE_READ(at, d_sb, s_dev);
	struct above_val *above = bpf_map_lookup_elem(&burst_above, &id);
	if (!above)
		return 0;
	struct below_ctx c = {.sc = sc, .above = above, .p = p, .hit = 0};
	bpf_loop(bc->nroots > 8 ? 8 : bc->nroots, below_step, &c, 0);
	return c.hit;
}

// file_of is the caller's open file behind descriptor fd, or NULL. Read
// without the locks the kernel takes: a racing close or dup2 gives the old
// file, the new one, or NULL.
static __always_inline struct file *file_of(int fd)
{
	if (fd < 0)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return 0;
	return f;
}

// start_dir sets the directory a relative path given with dfd starts
// from (its dentry and mount): the caller's working directory for
// AT_FDCWD, else the file behind dfd (NULL if there is none). Read without
// the locks the kernel takes: a racing chdir, close or dup2 gives the old
// or the new directory, or NULL.
static __always_inline void start_dir(int dfd, struct dentry **d, struct vfsmount **mnt)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	*d = 0;
	*mnt = 0;
	if (dfd == AT_FDCWD) {
		*d = BPF_CORE_READ(t, fs, pwd.dentry);
		*mnt = BPF_CORE_READ(t, fs, pwd.mnt);
		return;
	}
	struct file *f = file_of(dfd);
	if (!f)
		return;
	*d = BPF_CORE_READ(f, f_path.dentry);
	*mnt = BPF_CORE_READ(f, f_path.mnt);
}

struct walk_ctx {
	struct dentry *d;
	struct vfsmount *vfs; // the mount d is seen through
	struct dentry *mroot; // its root
	__u32 skip;           // levels below this are under the path's lowest point, not in it
	int hit;
	int top; // the walk ended above everything it could reach (not cut at WALK_MAX)
	struct dentry *at; // the directory skip levels up
};

static long walk_step(__u32 i, void *data)
{
	struct walk_ctx *c = data;
	struct dentry *d = c->d;
	if (!d) {
		c->top = 1;
		return 1;
	}
	if (i == c->skip)
		c->at = d;
	if (i >= c->skip) {
		struct root_id id = {};
		id.ino = BPF_CORE_READ(d, d_inode, i_ino);
		id.dev = BPF_CORE_READ(d, d_sb, s_dev);
		if (bpf_map_lookup_elem(&burst_root_ids, &id)) {
			c->hit = 1;
			return 1;
		}
	}
	// Locals only inside BPF_CORE_READ: it relocates every access in
	// its argument, and walk_ctx is no kernel type.
	struct vfsmount *vm = c->vfs;
	if (vm && d == c->mroot) {
		// The root of a mount: go on from the folder it is mounted
		// on, as ".." does (a filesystem mounted inside a root).
		// container_of(mnt, struct mount, mnt), its offset relocated.
		__u64 off = bpf_core_field_offset(struct mount, mnt);
		struct mount *m = (struct mount *)((char *)vm - off);
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (!parent || parent == m) {
			c->top = 1; // the root of the mount namespace
			return 1;
		}
		struct dentry *on = BPF_CORE_READ(m, mnt_mountpoint);
		vm = (struct vfsmount *)((char *)parent + off);
		c->vfs = vm;
		c->mroot = BPF_CORE_READ(vm, mnt_root);
		struct dentry *up = BPF_CORE_READ(on, d_parent);
		if (!on || up == on) {
			c->top = 1; // mounted on another mount's root: not followed
			return 1;
		}
		c->d = up;
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		c->top = 1; // the root of a filesystem seen without its mount
		return 1;
	}
	c->d = up;
	return 0;
}

// walk_to_root is relative_in_root's walk, on its own: the ".." count
// before it ends in many states, and inlined, the verifier walked the
// directories once for each. From the directory dfd names, it walks up
// the d_parent chain (at most WALK_MAX levels) looking for a guarded
// root's identity, counting only those skip or more levels up; name is
// where the path's first name starts plus one if the path may name its
// way down into a root from skip levels up (below_root), else 0.
__verified_once int walk_to_root(int dfd, int skip, int name)
{
	__u32 zero = 0;
	struct scratch *sc = get_scratch();
	struct burst_cfg *bc = bpf_map_lookup_elem(&burst_cfg, &zero);
	if (!sc || !bc || skip < 0 || skip >= WALK_MAX)
		return 0;
	// Verified on its own, so guarded on its own (see relative_in_root).
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (!bpf_core_field_exists(t->fs) || !bpf_core_field_exists(t->files) ||
	    !bpf_core_field_exists(struct mount, mnt_parent))
		return 0;
	// With no ".." but leading ones, the lowest point is where the lead
	// ends (skip == lead): c.at below is the directory the rest starts in.
	struct walk_ctx c = {.skip = skip, .hit = 0, .top = 0, .at = 0};
	start_dir(dfd, &c.d, &c.vfs);
	if (!c.d)
		return 0;
	struct vfsmount *vm = c.vfs;
	c.mroot = vm ? BPF_CORE_READ(vm, mnt_root) : 0;
	bpf_loop(WALK_MAX, walk_step, &c, 0);
	if (c.hit)
		return 1;
	// Cut at WALK_MAX levels: where it lands is unknown. Counted for a
	// tainted caller only (under an RMM agent, nothing honest works
	// 2,048 levels down); never for the host's other processes.
	if (!c.top && taint_of_current())
		return 1;
	if (!name || !c.at)
		return 0;
	return below_root(sc, bc, c.at, name - 1);
}

// relative_in_root reports whether the relative path in sc->path, given
// with dfd, lands inside a guarded root: its starting directory is walked
// up its d_parent chain (at most WALK_MAX levels) and compared with the
// roots' identities; a path whose ".." components climb k levels counts
// only if a root is found k or more levels up (it then stays inside it).
// Else a path that starts above a root and names its way down into it
// counts (below_root), if its only ".." components lead it.
__verified_once int relative_in_root(int dfd)
{
	struct scratch *sc = get_scratch();
	if (!sc)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	// Without the kernel's BTF the fields cannot be placed: relative
	// paths are then not counted (the reads below are never verified).
	if (!bpf_core_field_exists(t->fs) || !bpf_core_field_exists(t->files) ||
	    !bpf_core_field_exists(struct mount, mnt_parent))
		return 0;
	int dots = 0, lead = 0, name = 0;
	int k = path_shape(sc, &dots, &lead, &name);
	if (k >= WALK_MAX)
		return 0;
	return walk_to_root(dfd, k, dots == lead ? name : 0);
}

// lex_step's state lives in the scratch map, not on the stack: the
// verifier then takes it for any value and checks the step once, where
// values it tracked on the stack made it follow each iteration apart
// ("the sequence of jumps is too complex").
struct lex_ctx {
	struct scratch *sc;
};

static long lex_step(__u32 i, void *data)
{
	struct scratch *sc = ((struct lex_ctx *)data)->sc;
	int o = sc->lex_o, start = sc->lex_start;
	char ch = sc->path[i & (SCRATCH_LEN - 1)];
	if (ch != '/' && ch != 0) {
		// Copied down at once, kept only if the component is a name.
		// The write is never ahead of the read (o < start), so the
		// path is rewritten in place.
		sc->path[(o + 1 + (int)i - start) & (SCRATCH_LEN - 1)] = ch;
		return 0;
	}
	int len = (int)i - start;
	char c0 = sc->path[(o + 1) & (SCRATCH_LEN - 1)];
	char c1 = sc->path[(o + 2) & (SCRATCH_LEN - 1)];
	if (len == 2 && c0 == '.' && c1 == '.') {
		if (sc->lex_depth > 0) { // "/.." stays at "/", as the kernel's does
			sc->lex_depth--;
			o = sc->up[sc->lex_depth & (SCRATCH_LEN / 2 - 1)];
		}
	} else if (len > 1 || (len == 1 && c0 != '.')) {
		sc->up[sc->lex_depth & (SCRATCH_LEN / 2 - 1)] = o;
		sc->lex_depth++;
		sc->path[o & (SCRATCH_LEN - 1)] = '/';
		o += 1 + len;
	}
	sc->lex_start = i + 1;
	if (ch == 0) {
		if (o == 0) {
			sc->path[0] = '/';
			o = 1;
		}
		sc->path[o & (SCRATCH_LEN - 1)] = 0;
		sc->lex_o = o;
		return 1;
	}
	sc->lex_o = o;
	return 0;
}

// lexical_path rewrites the absolute path in sc->path (n bytes with its
// NUL) as its components name it: "//" and "/./" dropped, each ".." taking
// the component before it away ("/shop/./data//x" and
// "/tmp/../shop/data/x" are "/shop/data/x"; "/shop/data/../../etc/x" is
// "/etc/x"). Compared by prefix as written, padding put a path under a
// guarded root out of it, and a ".." took a path out of a root while its
// prefix still counted it. Lexical, as the prefix compare is: a symbolic
// link on the way is not followed (see docs/kernel.md).
static __always_inline void lexical_path(struct scratch *sc, int n)
{
	sc->lex_o = 0;
	sc->lex_start = 0;
	sc->lex_depth = 0;
	struct lex_ctx c = {.sc = sc};
	bpf_loop(n > SCRATCH_LEN ? SCRATCH_LEN : n, lex_step, &c, 0);
}

// zero_bytes sets the high bit of each byte of x that is 0, and no other
// bit (exact, unlike the usual has-a-zero test).
static __always_inline __u64 zero_bytes(__u64 x)
{
	const __u64 low7 = 0x7f7f7f7f7f7f7f7fULL;
	return ~(((x & low7) + low7) | x | low7);
}

struct odd_ctx {
	struct scratch *sc;
	int nul; // where the path's NUL is
	int odd;
};

static long odd_step(__u32 i, void *data)
{
	struct odd_ctx *c = data;
	int off = (int)i * 8;
	if (off >= c->nul)
		return 1;
	// The bytes at off and the bytes one further: a '/' followed by '/'
	// or '.' (both reads stay inside the padded buffer).
	__u64 w = *(__u64 *)&c->sc->path[off & (SCRATCH_LEN - 1)];
	__u64 v = *(__u64 *)&c->sc->path[(off + 1) & (SCRATCH_LEN - 1)];
	__u64 hit = zero_bytes(w ^ 0x2f2f2f2f2f2f2f2fULL) &
		    (zero_bytes(v ^ 0x2f2f2f2f2f2f2f2fULL) | zero_bytes(v ^ 0x2e2e2e2e2e2e2e2eULL));
	int valid = c->nul - off; // bytes before the NUL (past it: an earlier path's)
	if (valid < 8)
		hit &= (1ULL << ((valid & 7) * 8)) - 1;
	if (hit) {
		c->odd = 1;
		return 1;
	}
	return 0;
}

// path_odd reports whether the path in sc->path (its NUL at nul) has a
// "//" or a "/." (so "/./", "/../" or a name starting with a dot) that
// lexical_path would have to look at, eight bytes a step: most paths have
// none, and the byte-by-byte rewrite cost an absolute write-open about as
// much as the rest of the checks.
static __always_inline int path_odd(struct scratch *sc, int nul)
{
	struct odd_ctx c = {.sc = sc, .nul = nul, .odd = 0};
	bpf_loop(SCRATCH_LEN / 8, odd_step, &c, 0);
	return c.odd;
}

// burst_in_scope reads path (given with dfd) and reports whether it counts:
// an absolute path below a guarded root by its lexical prefix, a relative
// one whose place (where it starts, and how far its ".." climb) is inside
// a guarded root by the roots' identities.
__verified_once int burst_in_scope(int dfd, __u64 path)
{
	__u32 zero = 0;
	struct scratch *sc = get_scratch();
	struct burst_cfg *bc = bpf_map_lookup_elem(&burst_cfg, &zero);
	if (!sc || !bc)
		return 0;
	int n = bpf_probe_read_user_str(sc->path, SCRATCH_LEN, (const void *)path);
	if (n <= 0)
		return 0;
	if (sc->path[0] == 0)
		return 0; // "": fails with ENOENT, changes nothing
	if (sc->path[0] != '/')
		return bc->nids && relative_in_root(dfd);
	if (bc->nroots == 0)
		return 0; // no root to compare: the file guard alone
	if (path_odd(sc, n - 1))
		lexical_path(sc, n);
	struct root_ctx c = {.sc = sc, .hit = 0};
	bpf_loop(bc->nroots > 8 ? 8 : bc->nroots, root_step, &c, 0);
	return c.hit;
}

// burst_stop stops the caller (stop_caller) with the family root it was
// counted for, named by the path it changed (sc->path, cut to a key). On
// its own, not in burst_check's frame: the combined stack of burst_check's
// deepest call chain (down to a bpf_loop step of relative_in_root) must stay
// within the verifier's 512 bytes, and stop_caller's record is large.
__verified_once int burst_stop(__u32 flags, __u32 tgid, __u32 family, __u64 now)
{
	struct scratch *sc = get_scratch();
	if (!sc)
		return 0;
	__builtin_memset(sc->k.s, 0, KEY_LEN);
	bpf_probe_read_kernel_str(sc->k.s, KEY_LEN, sc->path);
	stop_caller(flags, tgid, now, WHY_BURST, family, family, 0, 0, family, &sc->k);
	return 0;
}


// burst_check counts a write-open, rename or unlink in the guarded trees
// for the caller and its family (a tainted tree's family; else its parent
// and grandparent, the spawners of one-file workers), and stops the caller
// when one of them crosses the threshold within the window, or when its
// family is already held by an earlier stop.
__verified_once int burst_check(__u32 flags, int dfd, __u64 path)
{
	if (!(flags & CFG_BURST) || (flags & CFG_OFF))
		return 0;
	if ((flags & CFG_TAINTED_ONLY) && !taint_of_current())
		return 0;
	__u32 zero = 0;
	struct burst_cfg *bc = bpf_map_lookup_elem(&burst_cfg, &zero);
	if (!bc || !bc->threshold)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&protected_pids, &tgid) || bpf_map_lookup_elem(&stopped, &tgid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (burst_allowed_now(tgid, now))
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || !burst_in_scope(dfd, path))
		return 0;
	__u32 fam0, fam1;
	families(tgid, &fam0, &fam1);
	if ((fam0 && bpf_map_lookup_elem(&burst_held, &fam0))) {
		burst_stop(flags, tgid, fam0, now);
		return 0;
	}
	if (fam1 && bpf_map_lookup_elem(&burst_held, &fam1)) {
		burst_stop(flags, tgid, fam1, now);
		return 0;
	}
	__u64 thr = bc->threshold, win = bc->window_ns;
	if (burst_bump(tgid, now, win) >= thr) {
		burst_stop(flags, tgid, 0, now);
		return 0;
	}
	// A family judged honest counts no further up: its work is not its
	// grandparent's burst either.
	if (fam0 && burst_allowed_now(fam0, now))
		return 0;
	if (fam0 && fam0 != tgid && burst_bump(fam0, now, win) >= thr) {
		burst_stop(flags, tgid, fam0, now);
		return 0;
	}
	if (fam1 && fam1 != tgid && !burst_allowed_now(fam1, now) && burst_bump(fam1, now, win) >= thr)
		burst_stop(flags, tgid, fam1, now);
	return 0;
}

// burst_fork remembers who forked child, for family counting.
static __always_inline void burst_fork(__u32 parent, __u32 child)
{
	bpf_map_update_elem(&parent_of, &child, &parent, BPF_ANY);
}

// burst_exit forgets an exiting task's burst state.
static __always_inline void burst_exit(__u64 id)
{
	__u32 tid = (__u32)id;
	bpf_map_delete_elem(&parent_of, &tid);
	if (tid != (__u32)(id >> 32))
		return;
	bpf_map_delete_elem(&burst_counts, &tid);
	bpf_map_delete_elem(&burst_allowed, &tid);
	bpf_map_delete_elem(&burst_held, &tid);
}

// path_check kills a tainted caller that writes, renames or unlinks a path
// that means the sensor (its binary, unit, config, state, pins).
__verified_once int path_check(__u32 flags, __u64 path)
{
	if (flags & CFG_OFF)
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || read_path(path) <= 0)
		return 0;
	if (!bpf_map_lookup_elem(&targets, &sc->k) && !bpf_map_lookup_elem(&targets, &sc->base))
		return 0;
	report(WHY_PATH, 0, SIGKILL, t->family, sc->k.s[0] ? sc->k.s : sc->base.s);
	poison(t, flags);
	return 0;
}

// exec_check looks at an exec by a tainted caller: a tamper tool whose
// arguments name the sensor is killed before it runs.
__verified_once int exec_check(__u32 flags, __u64 filename, __u64 argv_addr)
{
	const char *const *argv = (const char *const *)argv_addr;
	struct taint *t = taint_of_current();
	if (!t || (flags & CFG_OFF))
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || read_path(filename) <= 0)
		return 0;
	__u32 *kind = bpf_map_lookup_elem(&tools, &sc->base);
	if (!kind)
		return 0;
	if (*kind == TOOL_SPAWNER) {
		__u32 zero = 0;
		struct handoff_val h = {.ktime = bpf_ktime_get_ns(), .family = t->family, .pid = bpf_get_current_pid_tgid() >> 32};
		bpf_map_update_elem(&handoff, &zero, &h, BPF_ANY);
	}
	// Arguments are compared whole (a pid, a unit name, a path): give the
	// targets map every spelling that matters.
	for (int i = 1; i < 24; i++) {
		const char *a = 0;
		if (bpf_probe_read_user(&a, sizeof(a), &argv[i]) || !a)
			return 0;
		if (read_key(sc, a) <= 0)
			continue;
		if (bpf_map_lookup_elem(&targets, &sc->k)) {
			report(WHY_EXEC_TOOL, 0, SIGKILL, t->family, sc->k.s);
			poison(t, flags);
			return 0;
		}
	}
	return 0;
}

// exit_status is the exiting task's wait status (exit code << 8, or the
// signal that killed it), set by do_exit before sched_process_exit fires.
static __always_inline __u32 exit_status(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	// Without the kernel's BTF the loader cannot place the field: the
	// check is then 0, and the read below is never verified nor run.
	if (!bpf_core_field_exists(t->exit_code))
		return EXIT_UNKNOWN;
	return BPF_CORE_READ(t, exit_code);
}

// fresh_note records that a tainted caller wrote (or renamed into place, or
// made executable) the file at path, by basename. A rename or chmod of a
// file the tree wrote keeps the writer: the judgement is about who made
// the content, not who moved it.
// fresh_exe_at: when a tainted tree last made a file executable (the only
// files a hand-off stop is about). An exec outside the trees is matched
// against fresh only within FRESH_NS of it, so on a till where no agent
// made a program lately no exec pays for reading its path here.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fresh_exe_at SEC(".maps");

static __always_inline void fresh_executable(__u32 how, __u64 now)
{
	if (!(how & FRESH_CHMOD))
		return;
	__u32 zero = 0;
	bpf_map_update_elem(&fresh_exe_at, &zero, &now, BPF_ANY);
}

__verified_once int fresh_note(__u32 flags, __u64 path, __u32 how)
{
	if (!(flags & CFG_FRESH) || (flags & CFG_OFF))
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || read_path(path) <= 0 || !sc->base.s[0])
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct fresh_val *old = bpf_map_lookup_elem(&fresh, &sc->base);
	if (old && how != FRESH_WRITE && now - old->ktime < FRESH_NS) {
		old->ktime = now;
		old->how |= how;
		fresh_executable(old->how, now);
		return 0;
	}
	struct fresh_val v = {};
	v.ktime = now;
	v.writer = bpf_get_current_pid_tgid() >> 32;
	v.family = t->family;
	v.how = how;
	// Rewritten after it was made executable: still executable.
	if (old && now - old->ktime < FRESH_NS)
		v.how |= old->how & FRESH_CHMOD;
	bpf_get_current_comm(v.comm, sizeof(v.comm));
	bpf_map_update_elem(&fresh, &sc->base, &v, BPF_ANY);
	fresh_executable(v.how, now);
	return 0;
}

// fresh_rename carries a fresh file's record to the name it is renamed to
// (a payload written as a temporary file, then moved into place).
__verified_once int fresh_rename(__u32 flags, __u64 oldname, __u64 newname)
{
	if (!(flags & CFG_FRESH) || (flags & CFG_OFF))
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || read_path(oldname) <= 0)
		return 0;
	struct fresh_val *old = bpf_map_lookup_elem(&fresh, &sc->base);
	__u64 now = bpf_ktime_get_ns();
	if (!old || now - old->ktime >= FRESH_NS) {
		fresh_note(flags, newname, FRESH_RENAME);
		return 0;
	}
	struct fresh_val v = *old;
	v.ktime = now;
	v.how |= FRESH_RENAME;
	if (read_path(newname) <= 0 || !sc->base.s[0])
		return 0;
	bpf_map_update_elem(&fresh, &sc->base, &v, BPF_ANY);
	fresh_executable(v.how, now);
	return 0;
}

// fresh_chmod notes a chmod that makes a file executable.
static __always_inline void fresh_chmod(__u32 flags, const char *path, __u64 mode)
{
	if (mode & 0111)
		fresh_note(flags, (__u64)path, FRESH_CHMOD);
}

// fresh_exec stops (SIGSTOP, before the new image runs a single
// instruction) a tainted caller that execs a file whose basename a tainted
// process wrote, renamed or made executable within FRESH_NS, and records it
// in stopped for the sensor's judgement. The match is by basename and so
// coarse: the sensor confirms the file before it judges.
__verified_once int fresh_exec(__u32 flags, __u64 filename)
{
	if (!(flags & CFG_FRESH) || (flags & CFG_OFF))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct taint *t = taint_of_current();
	if (!t) {
		__u32 zero = 0;
		__u64 *at = bpf_map_lookup_elem(&fresh_exe_at, &zero);
		if (!at || !*at || now - *at >= FRESH_NS)
			return 0;
	}
	struct scratch *sc = get_scratch();
	if (!sc || read_path(filename) <= 0 || !sc->base.s[0])
		return 0;
	struct fresh_val *f = bpf_map_lookup_elem(&fresh, &sc->base);
	if (!f)
		return 0;
	if (now - f->ktime >= FRESH_NS)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&protected_pids, &tgid))
		return 0;
	if (t) {
		stop_caller(flags, tgid, now, WHY_FRESH_EXEC, 0, 0, 0, f->writer, t->family, &sc->base);
		return 0;
	}
	// Outside the trees only a file the tree made executable counts: a
	// program it wrote for something else to start. Its data files'
	// names (git's HEAD, a config) do not stop the machine's namesakes.
	if (!(f->how & FRESH_CHMOD))
		return 0;
	// A process outside every tainted tree runs what one of them made:
	// the hand-off of a tree that asked a service manager, cron, at or a
	// container runtime to start its payload (systemd-run, a unit file, a
	// crontab line), whose children are not the tree's in the kernel.
	// Judged like the tree's own exec, by who wrote the file.
	stop_caller(flags, tgid, now, WHY_FRESH_HANDOFF, 0, 0, 0, f->writer, f->family, &sc->base);
	return 0;
}

// emit_exec_args sends what the caller asked to exec: the filename and
// argv, NUL-separated, for the process source. The record is built in
// per-CPU scratch space and only its used part is copied to the ring: a
// typical command line is a few hundred bytes of the 4 KiB argv area, and
// reserving the whole area made each exec cost the ring 4.6 KiB.
static __always_inline void emit_exec_args(const char *filename, const char *const *argv)
{
	__u32 zero = 0;
	struct exec_args_rec *r = bpf_map_lookup_elem(&args_scratch, &zero);
	if (!r)
		return;
	fill_hdr(&r->h, REC_EXEC_ARGS);
	r->truncated = 0;
	r->_pad = 0;
	r->filename[0] = 0;
	bpf_probe_read_user_str(r->filename, PATH_LEN, filename);
	__u32 off = 0, argc = 0;
	for (int i = 0; i < MAX_ARGS; i++) {
		const char *a = 0;
		if (bpf_probe_read_user(&a, sizeof(a), &argv[i]) || !a)
			break;
		if (off >= ARGS_LEN) {
			r->truncated = 1;
			break;
		}
		int n = bpf_probe_read_user_str(&r->args[off & (ARGS_LEN - 1)], ARG_MAX, a);
		if (n <= 0)
			break;
		if (n == ARG_MAX)
			r->truncated = 1;
		off += n;
		argc++;
	}
	r->argc = argc;
	r->args_len = off;
	__u64 size = __builtin_offsetof(struct exec_args_rec, args) + (__u64)off;
	if (size > sizeof(*r))
		size = sizeof(*r);
	if (bpf_ringbuf_output(&proc_events, r, size, proc_wake()))
		ring_drop(RING_PROC);
}

static __always_inline int on_exec(const char *filename, const char *const *argv)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	emit_exec_args(filename, argv);
	exec_check(flags, (__u64)filename, (__u64)argv);
	fresh_exec(flags, (__u64)filename);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int tw_execve(struct tp_execve *ctx)
{
	return on_exec(ctx->filename, ctx->argv);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int tw_execveat(struct tp_execveat *ctx)
{
	return on_exec(ctx->filename, ctx->argv);
}

SEC("tracepoint/sched/sched_process_exec")
int tw_exec(struct tp_sched_exec *ctx)
{
	struct exec_rec *r = bpf_ringbuf_reserve(&proc_events, sizeof(*r), 0);
	if (!r) {
		ring_drop(RING_PROC);
		return 0;
	}
	fill_hdr(&r->h, REC_EXEC);
	r->old_tid = ctx->old_pid;
	r->filename[0] = 0;
	__u32 loc = ctx->filename_loc & 0xffff;
	bpf_probe_read_kernel_str(r->filename, PATH_LEN, (char *)ctx + loc);
	bpf_ringbuf_submit(r, proc_wake());
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int tw_fork(struct tp_sched_fork *ctx)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = ctx->child_pid;
	// Taint is inherited in the kernel: a child of the agent starts a
	// family of its own, a child of a family member joins it.
	struct taint *t = bpf_map_lookup_elem(&taint, &parent);
	if (t) {
		// A hand-off's mark is inherited as it is; an agent's child
		// starts a family.
		struct taint c = {.family = t->family ? t->family : child, .flags = t->flags & TAINT_HANDOFF};
		bpf_map_update_elem(&taint, &child, &c, BPF_ANY);
	} else if (bpf_map_lookup_elem(&managers, &parent)) {
		__u32 zero = 0;
		struct handoff_val *h = bpf_map_lookup_elem(&handoff, &zero);
		if (h && h->ktime && bpf_ktime_get_ns() - h->ktime < HANDOFF_NS) {
			struct taint c = {.family = h->family ? h->family : child, .flags = TAINT_HANDOFF};
			bpf_map_update_elem(&taint, &child, &c, BPF_ANY);
		}
	}
	// The sensor's threads (and children) are protected like the sensor.
	if (bpf_map_lookup_elem(&protected_pids, &parent)) {
		__u32 one = 1;
		bpf_map_update_elem(&protected_pids, &child, &one, BPF_ANY);
	}
	burst_fork(parent, child);
	struct fork_rec *r = bpf_ringbuf_reserve(&proc_events, sizeof(*r), 0);
	if (!r) {
		ring_drop(RING_PROC);
		return 0;
	}
	fill_hdr(&r->h, REC_FORK);
	r->child = child;
	bpf_ringbuf_submit(r, proc_wake());
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int tw_exit(struct tp_sched_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	bpf_map_delete_elem(&taint, &tid);
	bpf_map_delete_elem(&protected_pids, &tid);
	burst_exit(id);
	if (tid != (__u32)(id >> 32))
		return 0; // a thread, not the process
	bpf_map_delete_elem(&stopped, &tid);
	struct exit_rec *r = bpf_ringbuf_reserve(&proc_events, sizeof(*r), 0);
	if (!r) {
		ring_drop(RING_PROC);
		return 0;
	}
	fill_hdr(&r->h, REC_EXIT);
	r->code = exit_status();
	r->_pad = 0;
	bpf_ringbuf_submit(r, proc_wake());
	return 0;
}

// signalled: when a tainted process was last reported for a signal to
// the sensor, so the syscall's tripwire and signal_generate's report the
// same kill once.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);   // thread-group id of the sender
	__type(value, __u64); // ktime of the report
} signalled SEC(".maps");

// in_pidfd_signal: threads inside pidfd_send_signal(2), whose siginfo (and
// so the code signal_generate sees) the caller may choose.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); // thread id
	__type(value, __u32);
} in_pidfd_signal SEC(".maps");

// unstop_at: when a tainted process last sent the sensor a stop signal
// (or ptrace-attached, which sends one): a protected task that dequeues a
// stop signal within UNSTOP_NS of it continues itself (tw_signal_deliver).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unstop_at SEC(".maps");

#define UNSTOP_NS (10ULL * 1000000000ULL)
#define SIGCONT 18

static __always_inline int stop_signal(int sig)
{
	return sig == SIGSTOP || sig == 20 || sig == 21 || sig == 22; // SIGTSTP, SIGTTIN, SIGTTOU
}

static __always_inline void mark_unstop(void)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&unstop_at, &zero, &now, BPF_ANY);
}

// first_report reports whether the caller's signal to the sensor is not
// reported yet (none in the last second), and notes it.
static __always_inline int first_report(__u32 tgid)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 *at = bpf_map_lookup_elem(&signalled, &tgid);
	if (at && now - *at < 1000000000ULL)
		return 0;
	bpf_map_update_elem(&signalled, &tgid, &now, BPF_ANY);
	return 1;
}

// signal_check handles a signal sig to pid (a task id) by the caller.
static __always_inline int signal_check(__s64 pid, __u64 sig)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	if (hostile_check(flags))
		return 0;
	if (sig == 0)
		return 0; // an existence probe
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	__u32 target = pid;
	if (pid == -1 || (pid > 0 && bpf_map_lookup_elem(&protected_pids, &target))) {
		if (first_report(bpf_get_current_pid_tgid() >> 32))
			report(WHY_SIGNAL, target, sig, t->family, 0);
		poison(t, flags);
	}
	return 0;
}

// rt_sigqueueinfo(2) and rt_tgsigqueueinfo(2) send a signal as kill(2)
// and tgkill(2) do (sigqueue(3)), with a siginfo of the caller's making.
SEC("tracepoint/syscalls/sys_enter_rt_sigqueueinfo")
int tw_rt_sigqueueinfo(struct tp_sigqueueinfo *ctx)
{
	return signal_check((int)ctx->pid, (int)ctx->sig);
}

SEC("tracepoint/syscalls/sys_enter_rt_tgsigqueueinfo")
int tw_rt_tgsigqueueinfo(struct tp_tgsigqueueinfo *ctx)
{
	return signal_check((int)ctx->tgid, (int)ctx->sig);
}

SEC("tracepoint/syscalls/sys_enter_pidfd_send_signal")
int tw_pidfd_send_signal_enter(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 one = 1;
	if (taint_of_current())
		bpf_map_update_elem(&in_pidfd_signal, &tid, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_pidfd_send_signal")
int tw_pidfd_send_signal_exit(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&in_pidfd_signal, &tid);
	return 0;
}

// Codes a signal sent by a process carries (SI_USER: kill, pidfd_send_signal
// without siginfo, a write to cgroup.kill; SI_QUEUE: sigqueue; SI_TKILL).
#define SI_USER 0
#define SI_QUEUE -1
#define SI_TKILL -6

// Every way a process sends a signal ends in signal_generate, with the
// sender as the current task: the syscalls above, but also
// pidfd_send_signal(2) on a pidfd that came from no pidfd_open (a
// /proc/PID folder opened, or clone's CLONE_PIDFD), a process-group kill,
// and a write to the sensor's cgroup.kill. Timers and the kernel also
// generate signals, from whatever task happens to run (an interrupt):
// those carry other codes (SI_KERNEL, SI_TIMER, POLL_*) and are not a
// sender's act, so only the codes a process sends with count, or any code
// from inside pidfd_send_signal (whose siginfo the caller may fill).
SEC("tracepoint/signal/signal_generate")
int tw_signal_generate(struct tp_signal_generate *ctx)
{
	__u32 target = ctx->pid;
	if (ctx->sig <= 0 || !bpf_map_lookup_elem(&protected_pids, &target))
		return 0;
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	if (ctx->code != SI_USER && ctx->code != SI_QUEUE && ctx->code != SI_TKILL) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		if (!bpf_map_lookup_elem(&in_pidfd_signal, &tid))
			return 0;
	}
	if (stop_signal(ctx->sig) && (flags & CFG_ENFORCE))
		mark_unstop();
	if (first_report(bpf_get_current_pid_tgid() >> 32))
		report(WHY_SIGNAL, target, ctx->sig, t->family, 0);
	poison(t, flags);
	return 0;
}

struct tp_signal_deliver { // signal:signal_deliver
	__u64 common;
	int sig;
	int errno_;
	int code;
	int _pad;
	__u64 sa_handler;
	__u64 sa_flags;
};

// A stop signal from a tainted process cannot be refused, and killing its
// sender leaves the sensor stopped: alive to the service manager, blind to
// everything (the attacker's way around a restart on kill). The stopped
// task is the one dequeuing it, here, before it stops: it sends itself
// SIGCONT, which cancels the stop (deferred until its signal lock is
// released, so at worst it stops and is woken at once).
SEC("tracepoint/signal/signal_deliver")
int tw_signal_deliver(struct tp_signal_deliver *ctx)
{
	if (!stop_signal(ctx->sig))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (!bpf_map_lookup_elem(&protected_pids, &tid))
		return 0;
	__u32 zero = 0;
	__u64 *at = bpf_map_lookup_elem(&unstop_at, &zero);
	if (!at || !*at || bpf_ktime_get_ns() - *at > UNSTOP_NS)
		return 0;
	bpf_send_signal(SIGCONT);
	return 0;
}

// reach_check handles a tainted caller reaching into pid by another way
// than a signal: ptrace(2) attaching (a ptrace stop freezes the sensor as
// surely as SIGSTOP, and lets its memory be rewritten),
// process_vm_writev(2), and prlimit64(2) setting a limit (no descriptors
// or no memory left kills it by starvation).
static __always_inline int reach_check(int pid)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	if (hostile_check(flags))
		return 0;
	struct taint *t = taint_of_current();
	__u32 target = pid;
	if (!t || pid <= 0 || !bpf_map_lookup_elem(&protected_pids, &target))
		return 0;
	if (flags & CFG_ENFORCE)
		mark_unstop(); // PTRACE_ATTACH stops the tracee
	report(WHY_REACH, target, 0, t->family, 0);
	poison(t, flags);
	return 0;
}

// The scheduler's and the I/O scheduler's setters on another process:
// SCHED_IDLE, a nice of 19 or an idle I/O class starve the sensor while a
// busy encryptor runs, and an affinity pinned to a CPU the caller keeps
// busy does the same, with no signal. ps, top and taskset -p only read.
#define PRIO_PROCESS 0
#define PRIO_PGRP 1
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_WHO_PGRP 2

// REACH_PID_FIRST is the program of a call whose first argument is the
// process it acts on.
#define REACH_PID_FIRST(prog, call)                         \
	SEC("tracepoint/syscalls/sys_enter_" call)           \
	int prog(struct tp_pid_first *ctx)                    \
	{                                                     \
		return reach_check((int)ctx->a0);             \
	}

REACH_PID_FIRST(tw_sched_setaffinity, "sched_setaffinity")
REACH_PID_FIRST(tw_sched_setscheduler, "sched_setscheduler")
REACH_PID_FIRST(tw_sched_setparam, "sched_setparam")
REACH_PID_FIRST(tw_sched_setattr, "sched_setattr")

// fcntl(2) F_SETOWN / F_SETOWN_EX names the process (or, negative, the
// group) the kernel signals when the descriptor is ready for I/O; with
// F_SETSIG that signal can be SIGKILL, sent by the kernel with a code the
// signal tripwire cannot tie to the caller. Naming the sensor is the
// attack (honest code names itself or its own group).
#define F_SETOWN 8
#define F_SETOWN_EX 15

SEC("tracepoint/syscalls/sys_enter_fcntl")
int tw_fcntl(struct tp_pid_first *ctx)
{
	int pid = 0;
	if (ctx->a1 == F_SETOWN) {
		pid = (int)ctx->a2;
	} else if (ctx->a1 == F_SETOWN_EX) {
		int owner[2] = {}; // struct f_owner_ex: type, pid
		if (bpf_probe_read_user(owner, sizeof(owner), (const void *)ctx->a2))
			return 0;
		pid = owner[1];
	} else {
		return 0;
	}
	return reach_check(pid < 0 ? -pid : pid);
}

// setpriority(2) and ioprio_set(2) name a process or a process group; the
// sensor leads its own group (its pid is its group's id), so both count.
// REACH_PID_SECOND is the program of a call whose first argument says
// what its second names; only the kinds w1 and w2 name a process (or the
// group the sensor leads).
#define REACH_PID_SECOND(prog, call, w1, w2)                \
	SEC("tracepoint/syscalls/sys_enter_" call)           \
	int prog(struct tp_pid_first *ctx)                    \
	{                                                     \
		if (ctx->a0 != (w1) && ctx->a0 != (w2))       \
			return 0;                             \
		return reach_check((int)ctx->a1);             \
	}

REACH_PID_SECOND(tw_setpriority, "setpriority", PRIO_PROCESS, PRIO_PGRP)
REACH_PID_SECOND(tw_ioprio_set, "ioprio_set", IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP)

// The sensor's files in /proc: /proc/PID/mem is its memory, writable by
// root past page protections (its code rewritten, as a ptrace poke would)
// and readable (its secrets); environ holds what its unit passed it;
// oom_score_adj and oom_adj, written, make it the out-of-memory killer's
// first choice. Looked at once the open succeeded, on the descriptor, so
// no spelling of the path (relative, through /proc/self/../PID, by a
// thread's /proc/PID/task/TID) passes: the file is on procfs and its
// folder's name is a protected pid or thread id.
#define PROC_SUPER_MAGIC 0x9fa0
#define FMODE_WRITE 0x2

struct tp_sys_exit {
	__u64 common;
	__u64 nr;
	__s64 ret;
};

// name_is compares a dentry name read into s with a literal (both
// NUL-terminated, s at most 16 bytes).
static __always_inline int name_is(const char *s, const char *lit, int n)
{
	for (int i = 0; i < n && i < 16; i++)
		if (s[i] != lit[i])
			return 0;
	return 1;
}

// dentry_pid parses a dentry's name as a pid: 0 if it is not all digits.
static __always_inline __u32 dentry_pid(struct dentry *d)
{
	char s[12] = {};
	if (!d || bpf_probe_read_kernel_str(s, sizeof(s), BPF_CORE_READ(d, d_name.name)) <= 1)
		return 0;
	__u32 pid = 0;
	for (int i = 0; i < 11; i++) {
		char c = s[i];
		if (c == 0)
			return pid;
		if (c < '0' || c > '9')
			return 0;
		pid = pid * 10 + (c - '0');
	}
	return 0;
}

// fresh_identity completes the fresh record of a file the caller has just
// opened for writing (recorded by name at the open's entry) with the
// file's inode number: the sensor then confirms a stopped exec by the very
// file, not by a namesake changed since.
static __always_inline void fresh_identity(__u32 flags, struct file *f, struct dentry *d)
{
	if (!(flags & CFG_FRESH) || !(BPF_CORE_READ(f, f_mode) & FMODE_WRITE))
		return;
	struct scratch *sc = get_scratch();
	if (!sc)
		return;
	__builtin_memset(sc->base.s, 0, KEY_LEN);
	if (bpf_probe_read_kernel_str(sc->base.s, KEY_LEN, BPF_CORE_READ(d, d_name.name)) >= KEY_LEN)
		return; // cut: never a key
	struct fresh_val *v = bpf_map_lookup_elem(&fresh, &sc->base);
	if (!v || v->writer != bpf_get_current_pid_tgid() >> 32 || bpf_ktime_get_ns() - v->ktime > 1000000000ULL)
		return;
	v->ino = BPF_CORE_READ(d, d_inode, i_ino);
}

// open_exit is every check of an open that succeeded by a tainted caller:
// the sensor's /proc files, and the identity of a file it wrote.
static __always_inline int open_exit(long fd)
{
	if (fd < 0)
		return 0;
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	// Without the kernel's BTF the fields cannot be placed: the check is
	// off (the loader then leaves the reads below unverified and unrun).
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (!bpf_core_field_exists(task->files) || !bpf_core_field_exists(struct super_block, s_magic) ||
	    !bpf_core_field_exists(struct dentry, d_name) || !bpf_core_field_exists(struct file, f_mode))
		return 0;
	struct file *f = file_of((int)fd);
	if (!f)
		return 0;
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	if (!d)
		return 0;
	if (BPF_CORE_READ(d, d_sb, s_magic) != PROC_SUPER_MAGIC) {
		fresh_identity(flags, f, d);
		return 0;
	}
	char name[16] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(d, d_name.name));
	int hit = name_is(name, "mem", 4) || name_is(name, "environ", 8);
	if (!hit && (BPF_CORE_READ(f, f_mode) & FMODE_WRITE))
		hit = name_is(name, "oom_score_adj", 14) || name_is(name, "oom_adj", 8);
	if (!hit)
		return 0;
	__u32 target = dentry_pid(BPF_CORE_READ(d, d_parent));
	if (!target || !bpf_map_lookup_elem(&protected_pids, &target))
		return 0;
	report(WHY_REACH, target, 0, t->family, name);
	poison(t, flags);
	return 0;
}

#define OPEN_EXIT(prog, call)                       \
	SEC("tracepoint/syscalls/sys_exit_" call)    \
	int prog(struct tp_sys_exit *ctx)             \
	{                                             \
		return open_exit(ctx->ret);           \
	}

OPEN_EXIT(tw_openat_exit, "openat")
OPEN_EXIT(tw_open_exit, "open")
OPEN_EXIT(tw_openat2_exit, "openat2")

// A service manager stops the sensor as its operator would (SIGTERM from
// pid 1), and a clean stop stands the stopping tripwires down: asked by a
// process under an agent (systemctl with a glob, busctl, a D-Bus call
// from a script), that is switching tillwatch off with no signal and no
// tool the tripwires know. A process of a tainted tree (not the agent
// itself) connecting to a socket in bus_sockets (systemd's and the system
// bus's) is recorded in bus_touch; a clean stop soon after is taken for
// the attacker's and leaves every tripwire armed (sensor/agent).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, struct key); // socket path
	__type(value, __u32);
} bus_sockets SEC(".maps");

struct bus_touch_val {
	__u64 ktime;  // the last connect
	__u32 pid;    // its caller
	__u32 family; // the caller's taint family
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bus_touch_val);
} bus_touch SEC(".maps");

struct tp_connect {
	__u64 common;
	__u64 nr;
	__u64 fd;
	const void *addr;
	__u64 addrlen;
};

#define AF_UNIX 1

SEC("tracepoint/syscalls/sys_enter_connect")
int tw_connect(struct tp_connect *ctx)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	if (hostile_check(flags))
		return 0;
	struct taint *t = taint_of_current();
	if (!t || !t->family)
		return 0;
	__u16 fam = 0;
	if (ctx->addrlen <= 2 || bpf_probe_read_user(&fam, sizeof(fam), ctx->addr) || fam != AF_UNIX)
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc || read_path((__u64)ctx->addr + 2) <= 1)
		return 0;
	if (!bpf_map_lookup_elem(&bus_sockets, &sc->k))
		return 0;
	__u32 zero = 0;
	struct bus_touch_val v = {.ktime = bpf_ktime_get_ns(), .pid = bpf_get_current_pid_tgid() >> 32, .family = t->family};
	bpf_map_update_elem(&bus_touch, &zero, &v, BPF_ANY);
	return 0;
}

// pidfd_getfd(2) copies a descriptor out of another process: the
// sensor's link and map descriptors would let the caller detach the
// tripwires or rewrite their maps. Its pidfd cannot be told apart here, so
// any use by a tainted process counts (no remote-management script needs
// another process's descriptors).
SEC("tracepoint/syscalls/sys_enter_pidfd_getfd")
int tw_pidfd_getfd(void *ctx)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	if (hostile_check(flags))
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	report(WHY_REACH, 0, 0, t->family, 0);
	poison(t, flags);
	return 0;
}

// bpf(2) commands that give a handle on an object already loaded: by its
// pin (BPF_OBJ_GET) or by its id (BPF_*_GET_FD_BY_ID). With one, root can
// detach a link (the tripwire with it), rewrite the config map (every
// tripwire off) or drop its own taint; the tripwires are such objects, and
// their ids are listed to anyone. A tainted process asking for one is
// killed and its family poisoned: the call completes, but the process
// never returns to use the handle (another of its threads racing the kill
// within microseconds is the limit).
#define BPF_OBJ_GET 7
#define BPF_PROG_GET_FD_BY_ID 13
#define BPF_MAP_GET_FD_BY_ID 14
#define BPF_LINK_GET_FD_BY_ID 30

struct tp_bpf {
	__u64 common;
	__u64 nr;
	__u64 cmd;
	__u64 uattr;
	__u64 size;
};

SEC("tracepoint/syscalls/sys_enter_bpf")
int tw_bpf(struct tp_bpf *ctx)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	if (hostile_check(flags))
		return 0; // a member of a poisoned family dies at any bpf() call
	int cmd = (int)ctx->cmd;
	if (cmd != BPF_OBJ_GET && cmd != BPF_PROG_GET_FD_BY_ID && cmd != BPF_MAP_GET_FD_BY_ID && cmd != BPF_LINK_GET_FD_BY_ID)
		return 0;
	struct taint *t = taint_of_current();
	if (!t)
		return 0;
	report(WHY_BPF, 0, cmd, t->family, 0);
	poison(t, flags);
	return 0;
}

#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

// Every other ptrace request needs an attach first.
REACH_PID_SECOND(tw_ptrace, "ptrace", PTRACE_ATTACH, PTRACE_SEIZE)

REACH_PID_FIRST(tw_process_vm_writev, "process_vm_writev")

SEC("tracepoint/syscalls/sys_enter_prlimit64")
int tw_prlimit64(struct tp_pid_first *ctx)
{
	// Reading a limit (new_rlim NULL) is what ps and top do; pid 0 is the
	// caller itself.
	if (!ctx->a2 || (int)ctx->a0 <= 0)
		return 0;
	return reach_check((int)ctx->a0);
}

SEC("tracepoint/syscalls/sys_enter_kill")
int tw_kill(struct tp_kill *ctx)
{
	return signal_check(ctx->pid, ctx->sig);
}

SEC("tracepoint/syscalls/sys_enter_tkill")
int tw_tkill(struct tp_kill *ctx)
{
	return signal_check(ctx->pid, ctx->sig);
}

SEC("tracepoint/syscalls/sys_enter_tgkill")
int tw_tgkill(struct tp_tgkill *ctx)
{
	return signal_check(ctx->tgid, ctx->sig);
}

SEC("tracepoint/syscalls/sys_enter_pidfd_open")
int tw_pidfd_open(struct tp_pidfd_open *ctx)
{
	__u32 flags = cfg_flags();
	if (flags & CFG_OFF)
		return 0;
	struct taint *t = taint_of_current();
	__u32 target = ctx->pid;
	if (t && ctx->pid > 0 && bpf_map_lookup_elem(&protected_pids, &target)) {
		report(WHY_PIDFD, target, 0, t->family, 0);
		poison(t, flags);
	}
	return 0;
}

// write_open is every tripwire of an open for writing (or creating, or
// truncating) of path, resolved against dfd.
static __always_inline int write_open(int dfd, const char *path, __u64 oflags, __u64 mode)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	if (!(oflags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)))
		return 0;
	decoy_check(flags, (__u64)path, WHY_DECOY_OPEN);
	path_check(flags, (__u64)path);
	// Created with an execute bit (cp of a program, install): made
	// executable as surely as by a chmod after the write.
	__u32 how = FRESH_WRITE;
	if ((oflags & O_CREAT) && (mode & 0111))
		how |= FRESH_CHMOD;
	fresh_note(flags, (__u64)path, how);
	burst_check(flags, dfd, (__u64)path);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int tw_openat(struct tp_openat *ctx)
{
	return write_open((int)ctx->dfd, ctx->filename, ctx->flags, ctx->mode);
}

// open(2), openat2(2) and creat(2) open for writing like openat: an
// attacker who read this file would otherwise reach a decoy, the sensor's
// files or a burst past every file tripwire with one raw syscall.
SEC("tracepoint/syscalls/sys_enter_open")
int tw_open(struct tp_open *ctx)
{
	return write_open(AT_FDCWD, ctx->filename, ctx->flags, ctx->mode);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int tw_openat2(struct tp_openat2 *ctx)
{
	__u64 how[2] = {};
	// open_how begins with its flags and mode (__u64 each); an unreadable
	// one fails the syscall anyway, and is taken for a write-open here to
	// be safe.
	if (bpf_probe_read_user(how, sizeof(how), ctx->how))
		how[0] = O_WRONLY;
	return write_open((int)ctx->dfd, ctx->filename, how[0], how[1]);
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int tw_unlinkat(struct tp_dfd_path *ctx)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	decoy_check(flags, (__u64)ctx->path, WHY_DECOY_UNLINK);
	path_check(flags, (__u64)ctx->path);
	burst_check(flags, (int)ctx->dfd, (__u64)ctx->path);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int tw_unlink(struct tp_path1 *ctx)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	decoy_check(flags, (__u64)ctx->path, WHY_DECOY_UNLINK);
	path_check(flags, (__u64)ctx->path);
	burst_check(flags, AT_FDCWD, (__u64)ctx->path);
	return 0;
}

// on_rename is every tripwire of a rename of oldname (resolved against
// dfd) to newname. Both names are the sensor's to guard: moving its config
// away and moving a file over its binary are the same tampering.
static __always_inline int on_rename(int dfd, const char *oldname, const char *newname)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	decoy_check(flags, (__u64)oldname, WHY_DECOY_RENAME);
	decoy_check(flags, (__u64)newname, WHY_DECOY_RENAME);
	path_check(flags, (__u64)oldname);
	path_check(flags, (__u64)newname);
	fresh_rename(flags, (__u64)oldname, (__u64)newname);
	burst_check(flags, dfd, (__u64)oldname);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int tw_renameat2(struct tp_renameat *ctx)
{
	return on_rename((int)ctx->olddfd, ctx->oldname, ctx->newname);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int tw_renameat(struct tp_renameat *ctx)
{
	return on_rename((int)ctx->olddfd, ctx->oldname, ctx->newname);
}

SEC("tracepoint/syscalls/sys_enter_rename")
int tw_rename(struct tp_rename *ctx)
{
	return on_rename(AT_FDCWD, ctx->oldname, ctx->newname);
}

SEC("tracepoint/syscalls/sys_enter_linkat")
int tw_linkat(struct tp_renameat *ctx)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags))
		return 0;
	decoy_check(flags, (__u64)ctx->oldname, WHY_DECOY_LINK);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_creat")
int tw_creat(struct tp_creat *ctx)
{
	return write_open(AT_FDCWD, ctx->path, O_CREAT | O_WRONLY | O_TRUNC, ctx->mode);
}

SEC("tracepoint/syscalls/sys_enter_chmod")
int tw_chmod(struct tp_chmod *ctx)
{
	fresh_chmod(cfg_flags(), ctx->path, ctx->mode);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_fchmodat")
int tw_fchmodat(struct tp_fchmodat *ctx)
{
	fresh_chmod(cfg_flags(), ctx->path, ctx->mode);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_fchmodat2")
int tw_fchmodat2(struct tp_fchmodat *ctx)
{
	fresh_chmod(cfg_flags(), ctx->path, ctx->mode);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int tw_write(struct tp_write *ctx)
{
	hostile_check(cfg_flags());
	return 0;
}

// truncate(2) changes a file by path without opening it: truncating a
// decoy to nothing destroys it, truncating the sensor's binary or config
// is tampering, and truncating files in a guarded root is a burst like
// rewriting them. It is every tripwire of a write-open of that path.
// ftruncate(2) needs a descriptor opened for writing, which the open
// already passed through write_open.
SEC("tracepoint/syscalls/sys_enter_truncate")
int tw_truncate(struct tp_truncate *ctx)
{
	return write_open(AT_FDCWD, ctx->path, O_WRONLY | O_TRUNC, 0);
}

#define FILEID_INO32_GEN 1        // include/linux/exportfs.h
#define FILEID_INO32_GEN_PARENT 2
#define TMPFS_MAGIC 0x01021994

// The start of struct file_handle and the first words of its f_handle.
struct fh_head {
	__u32 handle_bytes;
	__s32 handle_type;
	__u32 f[3];
};

// handle_ino returns the inode number a file handle names on the
// superblock with magic, for the layouts whose inode number is plain in
// the handle, else 0: FILEID_INO32_GEN(_PARENT), whose first word is the
// inode number (ext2/3/4 and the other filesystems using the kernel's
// generic encoding), and tmpfs's own (type 1 too, but a generation, then
// the 64-bit inode number). Other layouts (btrfs, xfs's 64-bit ones, FAT)
// are not read: their handles pass as if they named no decoy.
static __always_inline __u64 handle_ino(const struct fh_head *h, unsigned long magic)
{
	if (h->handle_type != FILEID_INO32_GEN && h->handle_type != FILEID_INO32_GEN_PARENT)
		return 0;
	if (magic == TMPFS_MAGIC)
		return h->handle_bytes >= 12 ? (h->f[1] | (__u64)h->f[2] << 32) : 0;
	return h->handle_bytes >= 8 ? h->f[0] : 0;
}

// handle_decoy returns the basename of the decoy the handle names on the
// mount of mountdirfd, or NULL.
static __always_inline struct key *handle_decoy(int mountdirfd, const void *handle)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (!bpf_core_field_exists(t->files) || !bpf_core_field_exists(struct super_block, s_magic))
		return 0;
	struct fh_head h = {};
	if (bpf_probe_read_user(&h, 8 + 2 * sizeof(__u32), handle))
		return 0;
	// The third word only where the handle has it: reading past a
	// shorter one could fault.
	if (h.handle_bytes >= 12 && bpf_probe_read_user(&h.f[2], sizeof(__u32), (const char *)handle + 16))
		return 0;
	struct dentry *d = 0;
	struct vfsmount *mnt = 0;
	start_dir(mountdirfd, &d, &mnt);
	if (!d)
		return 0;
	struct root_id id = {};
	id.ino = handle_ino(&h, BPF_CORE_READ(d, d_sb, s_magic));
	id.dev = BPF_CORE_READ(d, d_sb, s_dev);
	if (!id.ino)
		return 0;
	return bpf_map_lookup_elem(&decoy_ids, &id);
}

// open_by_handle_at(2) opens a file by a handle from name_to_handle_at(2)
// and names no path, so no path check sees it. Needs CAP_DAC_READ_SEARCH;
// opened for writing (O_WRONLY, O_RDWR, O_TRUNC; it never creates):
//  - by any process, a handle naming a planted decoy (by inode number and
//    device, in the layouts handle_ino reads) is a decoy stop, judged as
//    any decoy stop (the process holds the decoy open for writing);
//  - by a tainted process (under an RMM agent), any handle is a stop the
//    sensor judges: no path is known, and no remote-management script has
//    a reason to write files by handle.
// An untainted process writing any other file by handle is let be: the
// file is unknown, and stopping backup or file-server software host-wide
// on a guess would be an outage.
SEC("tracepoint/syscalls/sys_enter_open_by_handle_at")
int tw_open_by_handle_at(struct tp_open_by_handle_at *ctx)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags) || (flags & CFG_OFF))
		return 0;
	if (!(ctx->flags & (O_WRONLY | O_RDWR | O_TRUNC)))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&protected_pids, &tgid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if ((flags & CFG_DECOYS) && (!(flags & CFG_TAINTED_ONLY) || taint_of_current())) {
		struct key *name = handle_decoy((int)ctx->mountdirfd, ctx->handle);
		if (name) {
			__u32 fam0 = 0, fam1 = 0;
			if (flags & CFG_BURST)
				families(tgid, &fam0, &fam1);
			stop_caller(flags, tgid, now, WHY_DECOY_OPEN, 0, fam0, fam1, 0, 0, name);
			return 0;
		}
	}
	struct taint *t = taint_of_current();
	struct scratch *sc = get_scratch();
	if (!t || !sc)
		return 0;
	__builtin_memset(sc->k.s, 0, KEY_LEN);
	__builtin_memcpy(sc->k.s, "open_by_handle_at", sizeof("open_by_handle_at"));
	stop_caller(flags, tgid, now, WHY_HANDLE_WRITE, 0, 0, 0, 0, t->family, &sc->k);
	return 0;
}

// io_uring carries opens, writes, renames and unlinks past every syscall
// tracepoint above: a ring would walk past each path tripwire. A process
// under an RMM agent (not the agent itself: stopping it would end remote
// management) has no reason to use one, so its io_uring calls (setting a
// ring up, or entering or registering with one it was handed) stop it for
// the sensor, which ends its tree. The operator can allow rings under
// agents (kernel.agent_io_uring: allow clears CFG_URING).
static __always_inline int on_io_uring(void)
{
	__u32 flags = cfg_flags();
	if (hostile_check(flags) || (flags & CFG_OFF) || !(flags & CFG_URING))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&protected_pids, &tgid))
		return 0;
	struct taint *t = taint_of_current();
	// A hand-off's mark may have reached an honest service the manager
	// started in the same moment: rings are not held against it.
	if (!t || !t->family || (t->flags & TAINT_HANDOFF))
		return 0;
	struct scratch *sc = get_scratch();
	if (!sc)
		return 0;
	__builtin_memset(sc->k.s, 0, KEY_LEN);
	__builtin_memcpy(sc->k.s, "io_uring", sizeof("io_uring"));
	stop_caller(flags, tgid, bpf_ktime_get_ns(), WHY_IO_URING, 0, 0, 0, 0, t->family, &sc->k);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_io_uring_setup")
int tw_io_uring_setup(void *ctx)
{
	return on_io_uring();
}

SEC("tracepoint/syscalls/sys_enter_io_uring_enter")
int tw_io_uring_enter(void *ctx)
{
	return on_io_uring();
}

SEC("tracepoint/syscalls/sys_enter_io_uring_register")
int tw_io_uring_register(void *ctx)
{
	return on_io_uring();
}
