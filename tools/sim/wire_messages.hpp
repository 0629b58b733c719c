#pragma once
/// The simulator's side of the frame contract (proto/frame.proto): SeriesStart, per-frame headers and
/// SeriesEnd built from a Simulator. Pure functions.
///
/// Every frame header is self-sufficient for a late joiner: besides start_index it carries the scan shape,
/// the energy axis and the acquisition parameters (the same values as SeriesStart). Scan positions are
/// given by start_index (raster order across passes), never as an explicit list.

#include "frame.pb.h"
#include "tools/sim/simulator.hpp"

namespace specwatch::sim {

wire::Modality WireModality(Modality m);
wire::PayloadType WirePayload(PayloadKind p);

wire::SeriesStart MakeSeriesStart(const Simulator& sim, double start_time_s);
wire::FrameHeader MakeFrameHeader(const Simulator& sim, const FrameInfo& frame, double acquisition_time_s);
wire::SeriesEnd MakeSeriesEnd(const Simulator& sim, uint64_t frames_sent, uint64_t spectra_sent);

}  // namespace specwatch::sim
