#pragma once
/// ZeroMQ endpoint strings with a direction prefix, as CZMQ writes them:
///   "@tcp://127.0.0.1:5555"  bind
///   ">tcp://127.0.0.1:5555"  connect
///   "tcp://127.0.0.1:5555"   the socket's default direction (given by the caller)
/// Several endpoints may be given separated by commas.

#include <zmq.hpp>

#include <string>
#include <vector>

namespace specwatch::stream {

enum class Direction { kBind, kConnect };

struct Endpoint {
  Direction direction = Direction::kConnect;
  std::string address;  ///< without the prefix
};

/// Parses "@addr", ">addr" or "addr" (then `default_direction`). Throws std::invalid_argument naming
/// `what` when the string is empty or has no transport ("tcp://", "ipc://", "inproc://").
std::vector<Endpoint> ParseEndpoints(const std::string& text, Direction default_direction,
                                     const std::string& what);

/// Binds or connects `socket` to every endpoint. Returns the addresses actually bound (with the port a
/// "tcp://127.0.0.1:*" wildcard resolved to) or connected.
std::vector<std::string> Attach(zmq::socket_t& socket, const std::vector<Endpoint>& endpoints);

}  // namespace specwatch::stream
