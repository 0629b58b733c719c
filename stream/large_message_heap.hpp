#pragma once
/// Heap settings for processes that move 0.1-1 MB ZeroMQ messages at kHz rates.
///
/// glibc serves blocks above M_MMAP_THRESHOLD (128 KB by default) with a fresh mmap and unmaps them on free,
/// so every received frame, every denoised result and every copied payload is first touched page by page:
/// the page faults (and the zeroing behind them) then cost more than the arithmetic on the data. This keeps
/// such blocks in the heap and keeps freed memory for the next message.
///
/// Call once at the start of main(), before threads start. Returns false if glibc refused a setting (the
/// process still works, only slower); the caller logs it.

#include <malloc.h>

namespace specwatch::stream {

/// glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit (and then keeps its default).
inline constexpr int kMaxMmapThresholdBytes = 32 << 20;
inline constexpr int kTrimThresholdBytes = 512 << 20;

inline bool RetainHeapForLargeMessages() {
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, kMaxMmapThresholdBytes) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace specwatch::stream
