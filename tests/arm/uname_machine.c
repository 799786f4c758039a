/* LD_PRELOAD shim for the emulated armhf root (tests/arm/run_emulated.sh):
 * uname() reports $LOWBIT_UNAME_MACHINE (e.g. "aarch64") as the machine, as a
 * 64-bit Arm kernel does to a 32-bit process (usual for 32-bit Pi OS on a Pi 4/5).
 * qemu-arm reports "armv7l" and cannot be told otherwise (QEMU_UNAME / -r set
 * the release only).
 *
 * It changes what userland code asks of uname(): `uname -m`, Python's
 * os.uname(), platform.machine() (pip's `platform_machine` marker) and
 * sysconfig.get_platform() (pip's wheel tags). The interpreter stays 32-bit,
 * so pip still accepts armv7l wheels, as on a real device.
 *
 *   arm-linux-gnueabihf-gcc -shared -fPIC -O2 -o uname_machine.so uname_machine.c
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

int uname(struct utsname *buf) {
  if (syscall(SYS_uname, buf) != 0) return -1;
  const char *machine = getenv("LOWBIT_UNAME_MACHINE");
  if (machine != NULL && machine[0] != '\0') {
    strncpy(buf->machine, machine, sizeof buf->machine - 1);
    buf->machine[sizeof buf->machine - 1] = '\0';
  }
  return 0;
}
