/* A QEMU TCG plugin that counts executed guest instructions, like
 * insn_count_plugin.c, and also records the count at "markers": calls of
 * close(fd) with a magic fd that the guest program makes on purpose.
 *
 *   qemu-aarch64 -plugin ./libinsn_marker.so,close=57 ./program
 *
 * The argument close=N is the target's syscall number of close (aarch64 57,
 * arm 6, x86_64 3). A close() whose fd, as 32 bits, is 0x3C0F0000 + id
 * (id < 65536; the fd does not exist, so the call fails with EBADF and has no
 * effect) prints, at exit, the line
 *
 *   lowbit-marker: <id> <instructions executed before the marker>
 *
 * in the order the markers came, then "lowbit-insns: N" (the whole run).
 * The instructions between two markers are the difference of their counts:
 * exact up to the few instructions of the translated block that holds the
 * system call (a block adds its instruction count when it starts executing).
 * The guest must be single-threaded while it measures (one counter, updated
 * inline without atomics).
 *
 * Written against the QEMU plugin API, version 1 (QEMU 7.x, Debian bookworm's
 * qemu-user), with the declarations copied from include/qemu/qemu-plugin.h
 * as insn_count_plugin.c does (Debian ships no <qemu-plugin.h>).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index,
                                              int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                                              uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                                              uint64_t a8);

/* Provided by the qemu binary. */
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))
#define MARKER_BASE 0x3C0F0000u
#define MAX_MARKERS 65536

EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;
static int64_t close_nr = -1;
static struct { uint32_t id; uint64_t count; } markers[MAX_MARKERS];
static size_t n_markers;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count,
                                           qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
  uint32_t fd = (uint32_t)a1;
  (void)id; (void)vcpu_index; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7;
  (void)a8;
  if (num != close_nr || (fd & 0xFFFF0000u) != MARKER_BASE || n_markers == MAX_MARKERS) return;
  markers[n_markers].id = fd & 0xFFFFu;
  markers[n_markers].count = insn_count;
  n_markers++;
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
  char line[96];
  size_t i;
  (void)id;
  (void)userdata;
  for (i = 0; i < n_markers; i++) {
    snprintf(line, sizeof line, "lowbit-marker: %" PRIu32 " %" PRIu64 "\n", markers[i].id,
             markers[i].count);
    qemu_plugin_outs(line);
  }
  snprintf(line, sizeof line, "lowbit-insns: %" PRIu64 "\n", insn_count);
  qemu_plugin_outs(line);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                               char **argv) {
  int i;
  (void)info;
  for (i = 0; i < argc; i++) {
    if (strncmp(argv[i], "close=", 6) == 0) close_nr = strtoll(argv[i] + 6, NULL, 10);
  }
  if (close_nr < 0) {
    qemu_plugin_outs("insn_marker_plugin: give the target's close syscall number, close=N\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
