"""The segmented append-only log: recovery at open, batched appends with rolling, reads, truncation."""

from __future__ import annotations

import logging
import os
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from taskflux.raft.storage import StorageError
from taskflux.raft.types import Entry
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.fileops import FileOps
from taskflux.storage.fsutil import (
    copy_range_to_new_file,
    fsync_dir,
    pread_exact,
    pwrite_all,
    write_new_file,
)
from taskflux.storage.records import (
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    EncodedBatch,
    decode_segment_header,
    encode_entries,
    encode_segment_header,
    parse_segment_name,
    record_checksum,
    segment_name,
)
from taskflux.storage.segment import ScanResult, Segment, find_valid_record, new_index, scan_records

logger = logging.getLogger("taskflux.storage")


def _first_index_of(segment: Segment) -> int:
    return segment.first_index


class SegmentedLog:
    """The log's segments under ``log_dir``, oldest first; the last one is the active segment.

    ``segments`` is a tuple that is replaced, never mutated, so a reader always sees a consistent
    list. Bounds (``base_index`` when the log is empty) and the commit index are the caller's.
    """

    def __init__(
        self,
        log_dir: str,
        tmp_dir: str,
        torn_dir: str,
        *,
        soft_limit_bytes: int,
        hard_limit_bytes: int,
        max_record_bytes: int,
        ops: FileOps,
    ) -> None:
        self.ops = ops
        self.log_dir = log_dir
        self.tmp_dir = tmp_dir
        self.torn_dir = torn_dir
        self.soft_limit_bytes = soft_limit_bytes
        self.hard_limit_bytes = hard_limit_bytes
        self.max_record_bytes = max_record_bytes
        self.segments: tuple[Segment, ...] = ()
        self.failure: BaseException | None = None

    # --- recovery -------------------------------------------------------------------------------

    def recover(self) -> None:
        """Open and scan every segment; cut a torn tail of the last one; refuse anything else bad."""
        found: list[tuple[int, str]] = []
        for name in os.listdir(self.log_dir):
            first = parse_segment_name(name)
            if first is None:
                logger.warning("ignoring %s: not a segment file name", os.path.join(self.log_dir, name))
            else:
                found.append((first, name))
        found.sort()
        segments: list[Segment] = []
        try:
            prev_term = 0
            for position, (first, name) in enumerate(found):
                is_last = position == len(found) - 1
                segment = self._recover_segment(first, name, is_last, segments, prev_term)
                if segment is None:
                    continue
                segments.append(segment)
                if segment.count:
                    prev_term = segment.terms[segment.count - 1]
        except BaseException:
            for segment in segments:
                segment.close()
            raise
        self.segments = tuple(segments)

    def _recover_segment(
        self, first: int, name: str, is_last: bool, before: list[Segment], prev_term: int
    ) -> Segment | None:
        path = os.path.join(self.log_dir, name)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            header_first, reason = decode_segment_header(pread_exact(fd, min(size, SEGMENT_HEADER_SIZE), 0))
            if reason is not None:
                if is_last and size <= SEGMENT_HEADER_SIZE:
                    # A segment with no room for a record: nothing in it can have been acknowledged.
                    self._set_aside(fd, path, 0, size, reason)
                    os.close(fd)
                    self.ops.unlink(path)
                    fsync_dir(self.ops, self.log_dir)
                    return None
                raise StorageCorrupted(path, 0, reason)
            if header_first != first:
                raise StorageCorrupted(path, 0, f"header says first index {header_first}, the name {first}")
            if before and first != before[-1].last_index + 1:
                raise StorageCorrupted(
                    path, None, f"segment starts at index {first} but the previous one ends at "
                    f"{before[-1].last_index}: the log has a hole"
                )
            scan = scan_records(fd, size, first, prev_term, self.max_record_bytes)
            if scan.bad_offset is not None:
                if not is_last:
                    raise StorageCorrupted(path, scan.bad_offset, scan.reason)
                self._refuse_unless_torn(fd, path, size, first + len(scan.terms), scan, prev_term)
                self._set_aside(fd, path, scan.bad_offset, size, scan.reason)
                self.ops.ftruncate(fd, scan.bad_offset)
                self.ops.fsync(fd)
            return Segment(first, path, fd, scan.offsets, scan.terms)
        except BaseException:
            os.close(fd)
            raise

    def _refuse_unless_torn(
        self, fd: int, path: str, size: int, bad_index: int, scan: ScanResult, prev_term: int
    ) -> None:
        """A bad record of the last segment is a torn write only if no valid record follows it.

        A crashed write is the last one and was never synced: it can leave a damaged end, never a damaged
        record with a valid one after it (those were synced before, and acknowledged). See docs/storage.md.
        """
        bad_offset = scan.bad_offset
        assert bad_offset is not None
        if scan.terms:
            prev_term = scan.terms[-1]
        found = find_valid_record(fd, bad_offset, size, bad_index, prev_term, self.max_record_bytes)
        if found is not None:
            offset, index = found
            raise StorageCorrupted(
                path, bad_offset, f"{scan.reason}, yet a valid record (index {index}) follows at byte offset "
                f"{offset}: this is damage to written data, not a torn write"
            )

    def _set_aside(self, fd: int, path: str, start: int, end: int, reason: str) -> None:
        """Copy bytes ``[start, end)`` of a segment to torn/ (durably) before they are cut.

        The copy is for forensics only (those bytes were never acknowledged): if it fails — the disk is
        full, say — the tail is cut without it, so start-up never needs free space.
        """
        base = os.path.join(self.torn_dir, f"{os.path.basename(path)}.{start}")
        target = f"{base}.torn"
        attempt = 0
        while os.path.exists(target):
            attempt += 1
            target = f"{base}.{attempt}.torn"
        try:
            copy_range_to_new_file(self.ops, fd, start, end, target)
        except OSError as error:
            logger.warning(
                "cut torn tail of %s at byte offset %d (%s): %d bytes dropped without a copy (%s)",
                path, start, reason, end - start, error,
            )
            return
        logger.warning(
            "cut torn tail of %s at byte offset %d (%s): %d bytes kept in %s",
            path, start, reason, end - start, target,
        )

    # --- bounds and reads -----------------------------------------------------------------------

    def find(self, index: int) -> Segment:
        """The segment holding ``index`` (the caller checked that the log holds it)."""
        segments = self.segments
        return segments[bisect_right(segments, index, key=_first_index_of) - 1]

    def term_at(self, index: int) -> int:
        segment = self.find(index)
        return segment.terms[index - segment.first_index]

    def read(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` (all in the log), stopping before the data would pass ``max_bytes``
        but returning at least one. Each record's checksum and index are verified again."""
        result: list[Entry] = []
        total = 0
        index = lo
        while index < hi:
            segment = self.find(index)
            offsets = segment.offsets
            first = segment.first_index
            k = index - first
            stop = min(hi - first, segment.count)
            end = k
            while end < stop:
                data_size = offsets[end + 1] - offsets[end] - RECORD_HEADER_SIZE
                if total + data_size > max_bytes and (result or end > k):
                    break
                total += data_size
                end += 1
            if end == k:
                break
            start_offset = offsets[k]
            buf = pread_exact(segment.fd, offsets[end] - start_offset, start_offset)
            self._decode_into(result, segment, buf, k, end)
            index = first + end
            if end < stop:
                break
        return result

    @staticmethod
    def _decode_into(result: list[Entry], segment: Segment, buf: bytes, k: int, end: int) -> None:
        pos = 0
        terms = segment.terms
        first = segment.first_index
        unpack_header = RECORD_HEADER.unpack_from
        for position in range(k, end):
            checksum, data_size, index, term = unpack_header(buf, pos)
            if (
                index != first + position
                or term != terms[position]
                or record_checksum(buf, pos, data_size) != checksum
            ):
                offset = segment.offsets[position]
                raise StorageCorrupted(segment.path, offset, f"record {first + position} changed on disk")
            start = pos + RECORD_HEADER_SIZE
            pos = start + data_size
            result.append(Entry(index, term, buf[start:pos]))

    # --- writes ---------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], prev_term: int, committed_index: int) -> None:
        """Write ``entries`` (validated against ``prev_term``); the caller made sure they attach.

        A conflicting suffix is truncated first. One fsync per segment file written (one in the
        common case); a new segment costs one more for its header plus one for the directory.
        """
        if self.failure is not None:
            raise StorageError(
                f"the log in {self.log_dir} failed a write earlier ({self.failure!r}); "
                "reopen the storage to recover from what is on disk"
            )
        batch = encode_entries(entries, prev_term, self.max_record_bytes)
        try:
            self._write(batch, entries[0].index, committed_index)
        except BaseException as e:
            # After a failed write or fsync, the file and the page cache may differ from the index
            # (and a retried fsync may report success for lost pages): refuse until reopened.
            self.failure = e
            raise

    def _write(self, batch: EncodedBatch, first: int, committed_index: int) -> None:
        segments = self.segments
        if segments and first <= segments[-1].last_index:
            self.truncate_from(first)
        self._roll_if_due(first, committed_index)
        ops = self.ops
        ends = batch.ends
        count = len(ends)
        done = 0
        base = 0  # batch-relative offset where record ``done`` starts
        while True:
            segment = self.segments[-1]
            start = segment.size_bytes
            # Records up to and including the first one that reaches the hard limit go here.
            stop = min(bisect_left(ends, self.hard_limit_bytes - start + base, lo=done) + 1, count)
            fd = segment.fd
            data = batch.join(done, stop)
            written = ops.pwrite(fd, data, start)
            if written != len(data):
                pwrite_all(ops, fd, memoryview(data)[written:], start + written)
            ops.fdatasync(fd)  # the data and the new size; not the timestamps (spares a journal commit)
            # Publish only now: the offsets, then the terms, then the count that readers trust.
            segment.offsets.extend(map((start - base).__add__, ends[done:stop]))
            segment.terms.extend(batch.terms(done, stop))
            segment.count += stop - done
            if stop == count:
                return
            base = ends[stop - 1]
            done = stop
            self._create_segment(segment.last_index + 1)

    def _roll_if_due(self, next_index: int, committed_index: int) -> None:
        segments = self.segments
        if not segments:
            self._create_segment(next_index)
            return
        active = segments[-1]
        size = active.size_bytes
        if active.count and (
            size >= self.hard_limit_bytes
            or (size >= self.soft_limit_bytes and active.last_index <= committed_index)
        ):
            self._create_segment(next_index)

    def _create_segment(self, first_index: int) -> None:
        """A new empty active segment: header written to tmp/, fsynced, renamed into log/, dir fsynced."""
        name = segment_name(first_index)
        path = os.path.join(self.log_dir, name)
        write_new_file(
            self.ops, os.path.join(self.tmp_dir, name + ".tmp"), path, [encode_segment_header(first_index)]
        )
        fd = os.open(path, os.O_RDWR)
        offsets, terms = new_index()
        self.segments = (*self.segments, Segment(first_index, path, fd, offsets, terms))

    def truncate_from(self, index: int) -> None:
        """Drop every entry at or after ``index``: later segments are deleted newest first, the one
        holding ``index`` is cut with ftruncate and fsynced (so no dropped record can come back)."""
        segments = list(self.segments)
        doomed: list[Segment] = []
        while segments and segments[-1].first_index >= index:
            doomed.append(segments.pop())
        keep = segments[-1] if segments and segments[-1].last_index >= index else None
        if keep is not None:
            k = index - keep.first_index
            keep.count = k
        self.segments = tuple(segments)
        self._delete(doomed)  # newest first
        if keep is not None:
            self.ops.ftruncate(keep.fd, keep.offsets[k])
            self.ops.fdatasync(keep.fd)
            del keep.offsets[k + 1 :]
            del keep.terms[k:]

    def drop_through(self, index: int) -> bool:
        """Delete whole segments whose last entry is at or below ``index``, oldest first: a crash part-way
        leaves a contiguous log that still reaches past ``index``."""
        segments = self.segments
        doomed = [s for s in segments if s.last_index <= index]
        if not doomed:
            return False
        self.segments = segments[len(doomed) :]
        self._delete(doomed)
        return True

    def discard_all(self) -> bool:
        """Delete every segment, newest first: a crash part-way leaves a contiguous prefix of the log,
        which the next open checks against the snapshot again (never a log that starts after it)."""
        doomed = list(reversed(self.segments))
        self.segments = ()
        self._delete(doomed)
        return bool(doomed)

    def _delete(self, doomed: list[Segment]) -> None:
        """Unlink ``doomed`` in the given order, each deletion made durable before the next: a crash
        leaves exactly the files of a completed prefix of that order, never a log with a hole."""
        for segment in doomed:
            segment.close()
            self.ops.unlink(segment.path)
            fsync_dir(self.ops, self.log_dir)

    def close(self) -> None:
        segments = self.segments
        self.segments = ()
        for segment in segments:
            segment.close()

