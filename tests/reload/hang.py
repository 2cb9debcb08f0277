#!/usr/bin/env python3
"""A file system that hangs on demand, as a stuck NFS mount does: every open of a file in the
directory given is held by a fanotify permission event (needs CAP_SYS_ADMIN) while "hold" is in
force, and let through on "release". Commands come on stdin, one per line; it prints "ready"
once watching, "holding" once a "hold" is in force, and "held" each time an open starts waiting."""
import ctypes
import os
import struct
import sys
import threading

FAN_CLASS_CONTENT = 0x04
FAN_OPEN_PERM = 0x00010000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_MARK_ADD = 0x01
FAN_ALLOW = 0x01
AT_FDCWD = -100
EVENT = "IBBHQii"  # struct fanotify_event_metadata

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
fan = libc.fanotify_init(FAN_CLASS_CONTENT, os.O_RDONLY)
if fan < 0:
    sys.exit(f"fanotify_init: {os.strerror(ctypes.get_errno())}")
if libc.fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD, AT_FDCWD, sys.argv[1].encode()) < 0:
    sys.exit(f"fanotify_mark {sys.argv[1]}: {os.strerror(ctypes.get_errno())}")

lock = threading.Lock()
holding = False
held = []


def allow(fd):
    os.write(fan, struct.pack("iI", fd, FAN_ALLOW))
    os.close(fd)


def commands():
    global holding
    for line in sys.stdin:
        with lock:
            if line.strip() == "hold":
                holding = True
                print("holding", flush=True)
            elif line.strip() == "release":
                holding = False
                for fd in held:
                    allow(fd)
                held.clear()
    # The test went away: let everything through, so nothing stays stuck.
    with lock:
        holding = False
        for fd in held:
            allow(fd)
        held.clear()


threading.Thread(target=commands, daemon=True).start()
print("ready", flush=True)
while True:
    buf = os.read(fan, 4096)
    offset = 0
    while offset < len(buf):
        length, _, _, _, _, fd, _ = struct.unpack_from(EVENT, buf, offset)
        offset += length
        with lock:
            if holding:
                held.append(fd)
                print("held", flush=True)
            else:
                allow(fd)
