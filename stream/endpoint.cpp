#include "stream/endpoint.hpp"

#include <stdexcept>

namespace specwatch::stream {

std::vector<Endpoint> ParseEndpoints(const std::string& text, Direction default_direction,
                                     const std::string& what) {
  std::vector<Endpoint> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    start = comma + 1;
    Endpoint e;
    e.direction = default_direction;
    if (!item.empty() && item[0] == '@') {
      e.direction = Direction::kBind;
      item.erase(0, 1);
    } else if (!item.empty() && item[0] == '>') {
      e.direction = Direction::kConnect;
      item.erase(0, 1);
    }
    if (item.find("://") == std::string::npos || item.find("://") == 0) {
      throw std::invalid_argument(what + ": '" + text +
                                  "' is not an endpoint (expected e.g. tcp://127.0.0.1:5555, "
                                  "prefixed @ to bind or > to connect)");
    }
    e.address = item;
    out.push_back(std::move(e));
    if (comma == text.size()) break;
  }
  return out;
}

std::vector<std::string> Attach(zmq::socket_t& socket, const std::vector<Endpoint>& endpoints) {
  std::vector<std::string> attached;
  for (const auto& e : endpoints) {
    if (e.direction == Direction::kBind) {
      socket.bind(e.address);
      attached.push_back(socket.get(zmq::sockopt::last_endpoint));
    } else {
      socket.connect(e.address);
      attached.push_back(e.address);
    }
  }
  return attached;
}

}  // namespace specwatch::stream
