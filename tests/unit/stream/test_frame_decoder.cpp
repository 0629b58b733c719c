#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "frame.pb.h"
#include "stream/frame_decoder.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

using namespace specwatch;
using namespace specwatch::stream;

namespace {

std::vector<zmq::message_t> Message(const wire::DetectorMessage& m, const void* payload = nullptr,
                                    size_t bytes = 0, bool with_payload = true) {
  std::vector<zmq::message_t> parts;
  std::string s;
  m.SerializeToString(&s);
  parts.emplace_back(s.data(), s.size());
  if (with_payload) parts.emplace_back(payload, bytes);
  return parts;
}

wire::DetectorMessage Start(const std::string& id, uint32_t channels, uint32_t w, uint32_t h) {
  wire::DetectorMessage m;
  auto* s = m.mutable_series_start();
  s->set_series_id(id);
  s->set_modality(wire::MODALITY_EELS);
  s->set_channel_count(channels);
  s->set_payload_type(wire::PAYLOAD_UINT16);
  s->mutable_energy_axis()->set_offset(-5.0);
  s->mutable_energy_axis()->set_dispersion(0.25);
  s->mutable_energy_axis()->set_unit("eV");
  s->mutable_scan_shape()->set_width(w);
  s->mutable_scan_shape()->set_height(h);
  s->mutable_defaults()->set_dwell_s(1e-3);
  s->mutable_defaults()->set_beam_current_pa(50.0);
  s->mutable_defaults()->set_pixel_area_a2(4.0);
  return m;
}

wire::DetectorMessage Frame(const std::string& id, uint64_t number, uint32_t spectra, uint32_t channels,
                            wire::PayloadType type = wire::PAYLOAD_UINT16, uint64_t start_index = 0) {
  wire::DetectorMessage m;
  auto* f = m.mutable_frame();
  f->set_series_id(id);
  f->set_frame_number(number);
  f->set_spectrum_count(spectra);
  f->set_channel_count(channels);
  f->set_payload_type(type);
  f->set_start_index(start_index);
  return m;
}

void Start1(FrameDecoder& d) {
  auto parts = Message(Start("s", 4, 3, 2), nullptr, 0, false);
  auto out = d.Decode(parts, 0, 0.0);
  REQUIRE(out.kind == DecodeOutcome::Kind::kSeriesStart);

}

}  // namespace

TEST_CASE("a valid uint16 frame becomes a batch with counts, positions and series defaults") {
  FrameDecoder d({});
  Start1(d);
  std::vector<uint16_t> payload = {1, 2, 3, 4, 10, 20, 30, 40, 0, 0, 65535, 7};
  auto parts = Message(Frame("s", 0, 3, 4, wire::PAYLOAD_UINT16, 5), payload.data(), payload.size() * 2);
  auto out = d.Decode(parts, 7, 1.5);
  REQUIRE(out.kind == DecodeOutcome::Kind::kFrame);
  const SpectrumBatch& b = *out.batch;
  CHECK(b.Channels() == 4);
  CHECK(b.Spectra() == 3);
  // Column i is spectrum i: the payload's C order (spectra x channels) read column-major.
  CHECK(b.counts(0, 1) == 10.0f);
  CHECK(b.counts(3, 1) == 40.0f);
  CHECK(b.counts(2, 2) == 65535.0f);
  // start_index 5 in a 3x2 scan: (2,1) pass 0, then (0,0) and (1,0) of pass 1.
  CHECK(b.positions[0].x == 2);
  CHECK(b.positions[0].y == 1);
  CHECK(b.positions[0].pass == 0);
  CHECK(b.positions[1].x == 0);
  CHECK(b.positions[1].y == 0);
  CHECK(b.positions[1].pass == 1);
  CHECK(b.positions[2].x == 1);
  CHECK(b.meta.dwell_s == doctest::Approx(1e-3));
  CHECK(b.meta.beam_current_pA == doctest::Approx(50.0));
  CHECK(b.meta.pixel_area_A2 == doctest::Approx(4.0));
  CHECK(b.meta.energy_axis.dispersion == doctest::Approx(0.25));
  CHECK(b.meta.modality == Modality::kEels);
  CHECK(b.meta.receive_index == 7);
  CHECK(out.missing_frames == 0);
  CHECK_FALSE(out.implicit_series_start);
}

TEST_CASE("uint32 and float32 payloads decode exactly") {
  FrameDecoder d({});
  Start1(d);
  std::vector<uint32_t> u = {100000, 1, 2, 3};
  auto p1 = Message(Frame("s", 0, 1, 4, wire::PAYLOAD_UINT32), u.data(), 16);
  auto o1 = d.Decode(p1, 0, 0);
  REQUIRE(o1.kind == DecodeOutcome::Kind::kFrame);
  CHECK(o1.batch->counts(0, 0) == 100000.0f);
  std::vector<float> f = {0.5f, 1.25f, 0.0f, 3.0f};
  auto p2 = Message(Frame("s", 1, 1, 4, wire::PAYLOAD_FLOAT32), f.data(), 16);
  auto o2 = d.Decode(p2, 1, 0);
  REQUIRE(o2.kind == DecodeOutcome::Kind::kFrame);
  CHECK(o2.batch->counts(1, 0) == 1.25f);
}

TEST_CASE("explicit positions override the raster index") {
  FrameDecoder d({});
  Start1(d);
  auto m = Frame("s", 0, 2, 4);
  auto* p = m.mutable_frame()->add_positions();
  p->set_x(9);
  p->set_y(8);
  p = m.mutable_frame()->add_positions();
  p->set_x(1);
  p->set_y(2);
  p->set_scan_pass(4);
  std::vector<uint16_t> payload(8, 1);
  auto parts = Message(m, payload.data(), 16);
  auto out = d.Decode(parts, 0, 0);
  REQUIRE(out.kind == DecodeOutcome::Kind::kFrame);
  CHECK(out.batch->positions[0].x == 9);
  CHECK(out.batch->positions[1].y == 2);
  CHECK(out.batch->positions[1].pass == 4);
  CHECK(out.batch->positions[0].pass == 0);
}

TEST_CASE("every bad input is rejected with its reason, and good frames around it still decode") {
  FrameDecoder d({.max_message_bytes = 4096});
  Start1(d);
  std::vector<uint16_t> ok(8, 3);
  uint64_t frame = 0;
  auto good = [&]() {
    auto parts = Message(Frame("s", frame++, 2, 4), ok.data(), 16);
    auto out = d.Decode(parts, 0, 0);
    CHECK(out.kind == DecodeOutcome::Kind::kFrame);
  };
  auto expect = [&](std::vector<zmq::message_t>& parts, RejectReason reason) {
    auto out = d.Decode(parts, 0, 0);
    REQUIRE(out.kind == DecodeOutcome::Kind::kRejected);
    CHECK(out.rejection.reason == reason);
    CHECK_FALSE(out.rejection.detail.empty());
  };
  good();
  SUBCASE("wrong number of parts") {
    auto parts = Message(Frame("s", frame, 2, 4), nullptr, 0, false);
    expect(parts, RejectReason::kPartCount);
    auto three = Message(Frame("s", frame, 2, 4), ok.data(), 16);
    three.emplace_back(3);
    expect(three, RejectReason::kPartCount);
    auto start_with_payload = Message(Start("t", 4, 1, 1), ok.data(), 16);
    expect(start_with_payload, RejectReason::kPartCount);
  }
  SUBCASE("unparsable header") {
    std::vector<zmq::message_t> parts;
    parts.emplace_back("\xff\xff\xff garbage", 12);
    parts.emplace_back(ok.data(), 16);
    expect(parts, RejectReason::kHeaderParse);
  }
  SUBCASE("channel count that differs from the series") {
    std::vector<uint16_t> five(10, 1);
    auto parts = Message(Frame("s", frame, 2, 5), five.data(), 20);
    expect(parts, RejectReason::kChannelMismatch);
  }
  SUBCASE("payload size that does not match") {
    auto parts = Message(Frame("s", frame, 2, 4), ok.data(), 14);
    expect(parts, RejectReason::kPayloadSize);
  }
  SUBCASE("unknown payload type") {
    auto m = Frame("s", frame, 2, 4);
    m.mutable_frame()->set_payload_type(static_cast<wire::PayloadType>(42));
    auto parts = Message(m, ok.data(), 16);
    expect(parts, RejectReason::kPayloadType);
  }
  SUBCASE("NaN, inf and negative values in a float payload") {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f}) {
      std::vector<float> f(8, 1.0f);
      f[5] = bad;
      auto parts = Message(Frame("s", frame, 2, 4, wire::PAYLOAD_FLOAT32), f.data(), 32);
      expect(parts, RejectReason::kBadValue);
    }
  }
  SUBCASE("duplicate and out-of-order frame numbers") {
    good();  // frame 1
    auto dup = Message(Frame("s", frame - 1, 2, 4), ok.data(), 16);
    expect(dup, RejectReason::kDuplicateFrame);
    auto old = Message(Frame("s", 0, 2, 4), ok.data(), 16);
    expect(old, RejectReason::kOutOfOrder);
  }
  SUBCASE("message over the size limit") {
    std::vector<uint16_t> big(4 * 1024, 1);
    auto parts = Message(Frame("s", frame, 1024, 4), big.data(), big.size() * 2);
    expect(parts, RejectReason::kTooLarge);
  }
  SUBCASE("positions not one per spectrum") {
    auto m = Frame("s", frame, 2, 4);
    m.mutable_frame()->add_positions();
    auto parts = Message(m, ok.data(), 16);
    expect(parts, RejectReason::kBadPositions);
  }
  good();
  good();
}

TEST_CASE("the rejection counts the spectra its header declared") {
  FrameDecoder d({});
  Start1(d);
  std::vector<uint16_t> ok(8, 3);
  auto parts = Message(Frame("s", 0, 2, 4), ok.data(), 10);
  auto out = d.Decode(parts, 0, 0);
  REQUIRE(out.kind == DecodeOutcome::Kind::kRejected);
  CHECK(out.rejection.spectra == 2);
  CHECK(out.rejection.series_id == "s");
  CHECK(*out.rejection.frame_number == 0);
}

TEST_CASE("gaps in the frame numbering are reported as missing frames") {
  FrameDecoder d({});
  Start1(d);
  std::vector<uint16_t> ok(4, 1);
  for (uint64_t n : {0, 1, 4, 5, 9}) {
    auto parts = Message(Frame("s", n, 1, 4), ok.data(), 8);
    auto out = d.Decode(parts, 0, 0);
    REQUIRE(out.kind == DecodeOutcome::Kind::kFrame);
    CHECK(out.missing_frames == (n == 4 ? 2 : n == 9 ? 3 : 0));
  }
}

TEST_CASE("a series end counts the frames sent after the last one received") {
  FrameDecoder d({});
  Start1(d);
  std::vector<uint16_t> ok(4, 1);
  for (uint64_t n : {0, 1, 2}) {
    auto parts = Message(Frame("s", n, 1, 4), ok.data(), 8);
    REQUIRE(d.Decode(parts, 0, 0).kind == DecodeOutcome::Kind::kFrame);
  }
  wire::DetectorMessage end;
  end.mutable_series_end()->set_series_id("s");
  end.mutable_series_end()->set_frames_sent(7);
  auto parts = Message(end, nullptr, 0, false);
  auto out = d.Decode(parts, 0, 0);
  REQUIRE(out.kind == DecodeOutcome::Kind::kSeriesEnd);
  CHECK(out.missing_frames == 4);
  CHECK(out.series_end.frames_sent == 7);
}

TEST_CASE("a frame of an unknown series opens it from the header alone (late joiner)") {
  FrameDecoder d({});
  std::vector<uint16_t> ok(4, 1);
  auto m = Frame("late", 120, 1, 4, wire::PAYLOAD_UINT16, 7);
  m.mutable_frame()->mutable_scan_shape()->set_width(5);
  m.mutable_frame()->mutable_scan_shape()->set_height(5);
  auto parts = Message(m, ok.data(), 8);
  auto out = d.Decode(parts, 0, 0);
  REQUIRE(out.kind == DecodeOutcome::Kind::kFrame);
  CHECK(out.implicit_series_start);
  CHECK_FALSE(out.series.announced);
  CHECK(out.missing_frames == 0);
  CHECK(out.batch->positions[0].x == 2);
  CHECK(out.batch->positions[0].y == 1);
  // A new series (announced) starts numbering afresh.
  auto s = Message(Start("next", 4, 2, 2), nullptr, 0, false);
  CHECK(d.Decode(s, 0, 0).kind == DecodeOutcome::Kind::kSeriesStart);
  auto f0 = Message(Frame("next", 0, 1, 4), ok.data(), 8);
  auto o0 = d.Decode(f0, 0, 0);
  REQUIRE(o0.kind == DecodeOutcome::Kind::kFrame);
  CHECK(o0.missing_frames == 0);
  CHECK_FALSE(o0.implicit_series_start);
}
