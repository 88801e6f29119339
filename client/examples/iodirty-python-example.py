#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Harvest one round of an iodirtyd session and read its dirty log, in Python.

An example client of org.iodirty.Tracker1 for languages other than C: it receives the
session's dirty log as a file descriptor and reads the log memfd itself, following the
layout documented in org.iodirty.Tracker1(5), "Log memfd layout" (lib/iod-dirty-log.h is
the C definition, lib/dirty-log.c the C reader). Python 3.11, the standard library and
dbus-python (Debian: python3-dbus), which passes Unix fds as dbus.types.UnixFd.

Usage:
    iodirty-python-example.py [--address=ADDRESS] [--region=GPA:SIZE]... [--start]
                              [--keep] SESSION

Each step is one D-Bus call on the session, which Manager1.GetSession(SESSION) names:
    --region      AddRegion(gpa, size): guest memory of an adopt-mode session (repeatable)
    --start       Start(): start dirty tracking (which clears every dirty bit of the IOMMU)
                  Harvest({}) -> (round, log fd, dirty_pages, precise, duration_usec)
                  read the round plane of every region from the log memfd, print it
                  Acknowledge(round), unless --keep: a round that is not acknowledged
                  is not lost, the next Harvest delivers it again, merged
Output, addresses and lengths in hexadecimal bytes:
    round R: N dirty pages, precise|imprecise
    region GPA LENGTH DIRTY   for each region: its dirty pages (decimal)
    dirty START LENGTH        for each run of dirty pages, in GPA order
    acknowledged R
Exit status: 0; 1 on a D-Bus error or a log that fails a check below.
"""
import argparse
import errno
import mmap
import os
import stat
import struct
import sys

import dbus

BUS_NAME = "org.iodirty.Tracker1"
MANAGER_PATH = "/org/iodirty/Tracker1"
MANAGER_IFACE = "org.iodirty.Manager1"
SESSION_IFACE = "org.iodirty.Session1"
TIMEOUT = 120  # seconds: a harvest of a large log can take a while

# --- the log memfd (all integers little-endian, offsets in bytes from the file's start) ---
LOG_MAGIC = 0x31474F4C59524944  # the bytes "DIRYLOG1" read as a little-endian uint64
LOG_VERSION = 1
LOG_FLAG_INCOMPLETE = 1 << 0  # the log missed dirty state: no migration may rely on it
# struct header at offset 0: magic u64, version u32, page_shift u32, max_regions u32,
# n_regions u32, regions_offset u64, size u64 (bytes in use), rounds u64, flags u64
HEADER = struct.Struct("<QIIIIQQQQ")
# struct region, max_regions of them at regions_offset, the first n_regions in use and
# sorted by gpa: gpa u64, length u64, accum_offset u64, round_offset u64
REGION = struct.Struct("<QQQQ")
PAGE_SHIFT_MIN, PAGE_SHIFT_MAX = 12, 30  # log pages of 4 KiB to 1 GiB


class LogError(Exception):
    """The fd does not hold a dirty log this reader understands."""


def plane_bytes(nbits):
    """A plane is nbits bits stored in whole 64-bit words."""
    return (nbits + 63) // 64 * 8


def open_log(fd):
    """Check the header and region table of the log memfd fd and map it read-only.

    Returns (page_shift, flags, regions, mapping); regions is a list of
    (gpa, length, accum_offset, round_offset). Nothing in the file is trusted before it
    has been checked: every offset and length must lie inside the bytes in use.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size < HEADER.size:
        raise LogError("not a memfd, or too small for the header")
    (magic, version, page_shift, max_regions, n_regions, regions_offset, size, _rounds,
     flags) = HEADER.unpack(os.pread(fd, HEADER.size, 0))
    if magic != LOG_MAGIC:
        raise LogError(f"bad magic {magic:#x}: not a dirty log")
    if version != LOG_VERSION:
        raise LogError(f"log version {version}, this reader knows version {LOG_VERSION}")
    if not PAGE_SHIFT_MIN <= page_shift <= PAGE_SHIFT_MAX:
        raise LogError(f"page shift {page_shift} out of range")
    if flags & ~LOG_FLAG_INCOMPLETE:
        raise LogError(f"unknown flags {flags:#x}")
    table_end = regions_offset + max_regions * REGION.size
    if n_regions > max_regions or regions_offset < HEADER.size or regions_offset % 8:
        raise LogError("bad region table")
    if not table_end <= size <= st.st_size:
        raise LogError(f"{size} bytes in use: the table needs {table_end}, the file "
                       f"has {st.st_size}")

    # The daemon only ever grows the file, so the bytes in use stay mapped while we read.
    mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    page = 1 << page_shift
    regions = []
    extents = [(0, HEADER.size), (regions_offset, table_end)]  # must not overlap
    for i in range(n_regions):
        gpa, length, accum, rnd = REGION.unpack_from(mapping, regions_offset + i * REGION.size)
        if length == 0 or gpa % page or length % page or gpa + length >= 1 << 64:
            raise LogError(f"region {i} [{gpa:#x} +{length:#x}] empty or misaligned")
        if regions and gpa < regions[-1][0] + regions[-1][1]:
            raise LogError(f"region {i} at {gpa:#x} is out of order or overlaps")
        for off in (accum, rnd):
            if off % 8 or off + plane_bytes(length >> page_shift) > size:
                raise LogError(f"a plane of region {i} lies outside the log")
            extents.append((off, off + plane_bytes(length >> page_shift)))
        regions.append((gpa, length, accum, rnd))
    extents.sort()
    if any(b[0] < a[1] for a, b in zip(extents, extents[1:])):
        raise LogError("header, region table and planes overlap")
    return page_shift, flags, regions, mapping


def set_bits(fd, mapping, offset, nbits):
    """Yield the set bits of the plane of nbits bits at offset, in order.

    Bit i of 64-bit word w (a little-endian u64) is the page w * 64 + i of the region.
    Only the parts of the memfd that hold data can hold a bit: ask SEEK_DATA/SEEK_HOLE for
    them and skip the holes, which read as zeros but would be allocated by reading them
    through the mapping (a large, clean log holds almost no memory; keep it that way).
    """
    end = offset + plane_bytes(nbits)
    pos = offset
    while pos < end:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data from pos to the end of the file
                return
            raise
        if pos >= end:
            return
        stop = min(os.lseek(fd, pos, os.SEEK_HOLE), end)
        # data starts at a page boundary and planes are 8-byte aligned: whole words
        for at in range(pos, stop, 8):
            word = int.from_bytes(mapping[at:at + 8], "little")
            while word:
                low = word & -word  # the lowest set bit
                bit = (at - offset) * 8 + low.bit_length() - 1
                if bit < nbits:  # bits past the region's end do not count
                    yield bit
                word ^= low
        pos = stop


def dirty_runs(bits):
    """Group increasing bit numbers into (first, count) runs."""
    first = count = None
    for bit in bits:
        if count is not None and bit == first + count:
            count += 1
            continue
        if count is not None:
            yield first, count
        first, count = bit, 1
    if count is not None:
        yield first, count


def read_round(fd):
    """Read the round plane of every region: [(gpa, length, [(start, length)...])]."""
    page_shift, flags, regions, mapping = open_log(fd)
    if flags & LOG_FLAG_INCOMPLETE:
        raise LogError("the log is marked incomplete: it missed dirty pages")
    result = []
    with mapping:
        for gpa, length, _accum, rnd in regions:
            bits = set_bits(fd, mapping, rnd, length >> page_shift)
            runs = [(gpa + (first << page_shift), count << page_shift)
                    for first, count in dirty_runs(bits)]
            result.append((gpa, length, runs))
    return page_shift, result


def region_arg(text):
    gpa, _, size = text.partition(":")
    return int(gpa, 0), int(size, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="the bus at ADDRESS (default: the system bus)")
    parser.add_argument("--region", type=region_arg, action="append", default=[],
                        metavar="GPA:SIZE", help="AddRegion first (adopt mode)")
    parser.add_argument("--start", action="store_true", help="Start tracking first")
    parser.add_argument("--keep", action="store_true", help="do not acknowledge the round")
    parser.add_argument("session")
    args = parser.parse_args()

    bus = dbus.bus.BusConnection(args.address) if args.address else dbus.SystemBus()
    manager = dbus.Interface(bus.get_object(BUS_NAME, MANAGER_PATH, introspect=False),
                             MANAGER_IFACE)
    path = manager.GetSession(args.session, signature="s")
    session = dbus.Interface(bus.get_object(BUS_NAME, path, introspect=False), SESSION_IFACE)
    for gpa, size in args.region:
        session.AddRegion(gpa, size, signature="tt")
    if args.start:
        session.Start(signature="")

    rnd, log, dirty_pages, precise, _usec = session.Harvest({}, signature="a{sv}",
                                                            timeout=TIMEOUT)
    fd = log.take()  # a dbus.types.UnixFd: take() hands over the descriptor
    try:
        page_shift, regions = read_round(fd)
    finally:
        os.close(fd)
    print(f"round {rnd}: {dirty_pages} dirty pages, {'precise' if precise else 'imprecise'}")
    total = 0
    for gpa, length, runs in regions:
        pages = sum(n for _, n in runs) >> page_shift
        total += pages
        print(f"region {gpa:#x} {length:#x} {pages}")
    for _gpa, _length, runs in regions:
        for start, length in runs:
            print(f"dirty {start:#x} {length:#x}")
    if total != dirty_pages:
        raise LogError(f"the round plane holds {total} dirty pages, Harvest said {dirty_pages}")
    # The round is used: let the daemon clear it.
    if not args.keep:
        session.Acknowledge(dbus.UInt64(rnd), signature="t")
        print(f"acknowledged {rnd}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except dbus.exceptions.DBusException as e:
        sys.exit(f"iodirty-python-example: {e.get_dbus_name()}: {e.get_dbus_message()}")
    except LogError as e:
        sys.exit(f"iodirty-python-example: bad log: {e}")
    except OSError as e:
        sys.exit(f"iodirty-python-example: {e}")
