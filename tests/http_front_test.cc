// Tests of the HTTP front (api/http_front.h): bodies cut at the limit however they are framed, deadlines
// on heads and bodies, connection caps, connection reuse, pipelining, streaming and a quick stop. Most run
// the front alone with trivial handlers; the last ones go through the real Server. Everything speaks raw
// HTTP over loopback sockets, since the attacks are what no HTTP client library would send.
#include "api/http_front.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/server.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A client socket on 127.0.0.1:port that sends and reads raw bytes, with deadlines on every read.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    EXPECT_TRUE(connected_) << std::strerror(errno);
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  int fd() const { return fd_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // Waits up to `seconds` for bytes; false on timeout. Sets *closed when the peer closed or reset.
  bool ReadSome(double seconds, bool* closed) {
    *closed = false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(seconds * 1000)) <= 0) return false;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      *closed = true;
      return true;
    }
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }

  // One complete response with a Content-Length body (or whatever came before a close or the timeout).
  std::string ReadResponse(double seconds = 3) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      const size_t head_end = buffer_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        size_t length = 0;
        const size_t at = Lower(buffer_.substr(0, head_end)).find("\r\ncontent-length:");
        if (at != std::string::npos) length = std::stoul(buffer_.substr(at + 17));
        if (buffer_.size() >= head_end + 4 + length) {
          std::string response = buffer_.substr(0, head_end + 4 + length);
          buffer_.erase(0, response.size());
          return response;
        }
      }
      const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
      bool closed = false;
      if (left <= 0 || !ReadSome(left, &closed) || closed) {
        std::string rest;
        rest.swap(buffer_);
        return rest;
      }
    }
  }

  // Everything until the peer closes; *closed says whether it did within `seconds`.
  std::string ReadUntilClosed(double seconds, bool* closed) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    *closed = false;
    while (!*closed) {
      const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
      if (left <= 0 || !ReadSome(left, closed)) break;
    }
    std::string all;
    all.swap(buffer_);
    return all;
  }

  bool connected() const { return connected_; }

 private:
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

int StatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
  return std::stoi(response.substr(9, 3));
}

std::string BodyOf(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// The server's error shape: {"error": {"message", "type", "param", "code"}}.
void ExpectJsonError(const std::string& response, int status, const std::string& type) {
  EXPECT_EQ(StatusOf(response), status) << response;
  const json body = json::parse(BodyOf(response), nullptr, false);
  ASSERT_TRUE(body.is_object()) << response;
  ASSERT_TRUE(body.contains("error")) << response;
  EXPECT_TRUE(body["error"]["message"].is_string()) << response;
  EXPECT_EQ(body["error"]["type"], type) << response;
  EXPECT_TRUE(body["error"].contains("param") && body["error"].contains("code")) << response;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A gzip stream of `size` zero bytes (a decompression bomb: about a thousandth of that on the wire).
std::string GzipOfZeros(size_t size) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<unsigned char> zeros(1 << 20, 0), out(1 << 16);
  std::string gz;
  for (size_t fed = 0; fed < size;) {
    const size_t n = std::min(zeros.size(), size - fed);
    fed += n;
    z.next_in = zeros.data();
    z.avail_in = static_cast<uInt>(n);
    const int flush = fed == size ? Z_FINISH : Z_NO_FLUSH;
    do {
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      deflate(&z, flush);
      gz.append(reinterpret_cast<char*>(out.data()), out.size() - z.avail_out);
    } while (z.avail_out == 0);
  }
  deflateEnd(&z);
  return gz;
}

// Sends a chunked body of up to `total` bytes in 64 KiB chunks on its own thread, stopping when the
// socket stops taking data for a second (the server stopped reading) or fails (the server closed).
class ChunkedFlood {
 public:
  ChunkedFlood(int fd, size_t total) {
    const timeval one_second{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &one_second, sizeof(one_second));
    thread_ = std::thread([this, fd, total] {
      const std::string chunk = "10000\r\n" + std::string(1 << 16, 'a') + "\r\n";
      while (sent_ < total) {
        const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n <= 0) break;
        sent_ += static_cast<size_t>(n);
      }
    });
  }
  // Bytes the socket took before it stopped.
  size_t Join() {
    thread_.join();
    return sent_;
  }

 private:
  std::atomic<size_t> sent_{0};
  std::thread thread_;
};

size_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6)) * 1024;
  }
  return 0;
}

// The front alone, serving trivial routes on a free loopback port until destroyed.
class FrontServer {
 public:
  explicit FrontServer(const HttpFrontOptions& options, const std::function<void(HttpFront&)>& more_routes = {}) {
    Status s = front_.Configure(options);
    EXPECT_TRUE(s.ok()) << s.ToString();
    front_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    // Echoes the query's i (pipelining and smuggling tests tell responses apart by it).
    front_.Get("/n", [this](const httplib::Request& req, httplib::Response& res) {
      ++handled;
      res.set_content("n=" + req.get_param_value("i"), "text/plain");
    });
    front_.Post("/echo", [this](const httplib::Request& req, httplib::Response& res) {
      ++handled;
      res.set_content("echo:" + req.body, "text/plain");
    });
    if (more_routes) more_routes(front_);
    port_ = front_.bind_to_any_port("127.0.0.1");
    EXPECT_GT(port_, 0);
    thread_ = std::thread([this] { serve_status_ = front_.Serve(); });
  }
  ~FrontServer() { EXPECT_LT(Stop(), 5.0); }

  // Stops and returns how long Serve() took to return.
  double Stop() {
    if (!thread_.joinable()) return 0;
    const auto start = Clock::now();
    front_.Stop();
    thread_.join();
    EXPECT_TRUE(serve_status_.ok()) << serve_status_.ToString();
    return SecondsSince(start);
  }

  int port() const { return port_; }
  HttpFront& front() { return front_; }
  std::atomic<int> handled{0};

 private:
  HttpFront front_;
  int port_ = 0;
  std::thread thread_;
  Status serve_status_;
};

// Waits (bounded) until the front counts `n` open connections.
bool WaitForConnections(HttpFront& front, int n) {
  for (int i = 0; i < 200; ++i) {
    if (front.connections() == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string Get(const std::string& target) { return "GET " + target + " HTTP/1.1\r\nHost: t\r\n\r\n"; }

// An 8 KiB body carrying `smuggled` after a line of 4 KiB. cpp-httplib alone, refusing a request before
// reading its body, parsed what came past the first 4 KiB of a body sent after its head as a request.
std::string BodyWithRequestAt4KiB(const std::string& smuggled) {
  std::string body = std::string(4094, 'x') + "\r\n" + smuggled;
  return body + std::string(8192 - body.size(), ' ');
}

TEST(HttpFrontTest, ChunkedBodyIsCutAtTheLimitWhileItIsRead) {
  FrontServer server(HttpFrontOptions{});  // 1 MiB limit
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"));
  ChunkedFlood flood(c.fd(), size_t{100} << 20);  // 100 MB
  const std::string response = c.ReadResponse(5);
  ExpectJsonError(response, 413, "invalid_request_error");
  bool closed = false;
  c.ReadUntilClosed(5, &closed);
  EXPECT_TRUE(closed) << "the connection stayed open after a 413";
  const size_t sent = flood.Join();
  // The server stopped reading at the limit: the client got only what the socket buffers hold past it.
  EXPECT_LT(sent, size_t{32} << 20) << "the server kept reading the 100 MB body";
  EXPECT_EQ(server.handled, 0);
}

TEST(HttpFrontTest, DeclaredLengthOverTheLimitIsRefusedBeforeTheBody) {
  FrontServer server(HttpFrontOptions{});
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n\r\n"));
  ExpectJsonError(c.ReadResponse(), 413, "invalid_request_error");
  bool closed = false;
  c.ReadUntilClosed(3, &closed);
  EXPECT_TRUE(closed);
  // 20 digits do not fit in 64 bits: still a 413, not a parse error or a wrap-around.
  RawClient huge(server.port());
  ASSERT_TRUE(huge.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551617\r\n\r\n"));
  ExpectJsonError(huge.ReadResponse(), 413, "invalid_request_error");
  EXPECT_EQ(server.handled, 0);
}

TEST(HttpFrontTest, CompressedBodiesAreRefusedUnread) {
  FrontServer server(HttpFrontOptions{});
  const std::string bomb = GzipOfZeros(size_t{100} << 20);
  ASSERT_LT(bomb.size(), size_t{1} << 20);  // under the limit on the wire
  RawClient gz(server.port());
  ASSERT_TRUE(gz.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: " +
                      std::to_string(bomb.size()) + "\r\n\r\n" + bomb));
  ExpectJsonError(gz.ReadResponse(), 415, "invalid_request_error");
  bool closed = false;
  gz.ReadUntilClosed(3, &closed);
  EXPECT_TRUE(closed);
  RawClient te(server.port());
  ASSERT_TRUE(te.Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
  ExpectJsonError(te.ReadResponse(), 415, "invalid_request_error");
  EXPECT_EQ(server.handled, 0);
  // identity is no compression: accepted.
  RawClient plain(server.port());
  ASSERT_TRUE(plain.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Encoding: identity\r\n"
                         "Content-Length: 2\r\n\r\nhi"));
  const std::string ok = plain.ReadResponse();
  EXPECT_EQ(StatusOf(ok), 200) << ok;
  EXPECT_EQ(BodyOf(ok), "echo:hi");
}

TEST(HttpFrontTest, ChunkedBodiesUnderTheLimitArriveDecoded) {
  FrontServer server(HttpFrontOptions{});
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"));
  const std::string response = c.ReadResponse();
  EXPECT_EQ(StatusOf(response), 200) << response;
  EXPECT_EQ(BodyOf(response), "echo:hello world");
}

TEST(HttpFrontTest, FramingThatCouldBeReadTwoWaysIsRefused) {
  FrontServer server(HttpFrontOptions{});
  const std::vector<std::string> heads = {
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n X-Folded: yes\r\n\r\n",
      "POST /echo HTTP/1.1\r\nX-A: b\nContent-Length: 5\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const std::string& head : heads) {
    RawClient c(server.port());
    ASSERT_TRUE(c.Send(head));
    ExpectJsonError(c.ReadResponse(), 400, "invalid_request_error");
    bool closed = false;
    c.ReadUntilClosed(3, &closed);
    EXPECT_TRUE(closed) << head;
  }
  // The same length twice is one length.
  RawClient same(server.port());
  ASSERT_TRUE(same.Send("POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"));
  EXPECT_EQ(BodyOf(same.ReadResponse()), "echo:ok");
  EXPECT_EQ(server.handled, 1);
}

TEST(HttpFrontTest, HeadOverTheLimitIsRefused) {
  HttpFrontOptions o;
  o.max_header_bytes = 1024;
  FrontServer server(o);
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("GET /health HTTP/1.1\r\nX-Big: " + std::string(2000, 'b') + "\r\n\r\n"));
  ExpectJsonError(c.ReadResponse(), 431, "invalid_request_error");
  RawClient endless(server.port());  // no end of head at all
  ASSERT_TRUE(endless.Send("GET /health HTTP/1.1\r\nX-Big: " + std::string(4000, 'b')));
  ExpectJsonError(endless.ReadResponse(), 431, "invalid_request_error");
}

TEST(HttpFrontTest, SlowAndIdleClientsDoNotTakeTheThreads) {
  HttpFrontOptions o;
  o.threads = 2;
  FrontServer server(o);
  // 24 heads that never end, and 8 keep-alive connections idle after a request.
  std::vector<std::unique_ptr<RawClient>> slow, idle;
  for (int i = 0; i < 24; ++i) {
    slow.push_back(std::make_unique<RawClient>(server.port()));
    ASSERT_TRUE(slow.back()->Send("GET /health HTTP/1.1\r\nHost: t\r\n"));
  }
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<RawClient>(server.port()));
    ASSERT_TRUE(idle.back()->Send(Get("/health")));
    ASSERT_EQ(StatusOf(idle.back()->ReadResponse()), 200);
  }
  ASSERT_TRUE(WaitForConnections(server.front(), 32));
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(5, 0);
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    auto res = client.Get("/health");
    const double seconds = SecondsSince(start);
    ASSERT_TRUE(res) << "no answer while slow clients held connections";
    EXPECT_EQ(res->status, 200);
    EXPECT_LT(seconds, 1.0);
  }
  // The idle ones still work.
  ASSERT_TRUE(idle[0]->Send(Get("/n?i=7")));
  EXPECT_EQ(BodyOf(idle[0]->ReadResponse()), "n=7");
}

TEST(HttpFrontTest, TrickledHeadIsCutAtTheHeaderDeadline) {
  HttpFrontOptions o;
  o.header_timeout_s = 0.5;
  FrontServer server(o);
  RawClient c(server.port());
  const auto start = Clock::now();
  ASSERT_TRUE(c.Send("GET /health HTTP/1.1\r\n"));
  // One byte every 100 ms: each recv() succeeds well within any per-read timeout.
  std::string response;
  for (int i = 0; i < 40 && response.empty(); ++i) {
    if (!c.Send("x")) break;
    bool closed = false;
    if (c.ReadSome(0.1, &closed)) response = c.ReadResponse(1);
  }
  const double seconds = SecondsSince(start);
  ExpectJsonError(response, 408, "timeout");
  EXPECT_GE(seconds, 0.45);
  EXPECT_LT(seconds, 1.5);
  bool closed = false;
  c.ReadUntilClosed(3, &closed);
  EXPECT_TRUE(closed);
}

TEST(HttpFrontTest, TrickledBodyIsCutAtTheBodyDeadline) {
  HttpFrontOptions o;
  o.body_timeout_s = 0.5;
  FrontServer server(o);
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"));
  const auto start = Clock::now();
  std::string response;
  for (int i = 0; i < 40 && response.empty(); ++i) {
    if (!c.Send("x")) break;
    bool closed = false;
    if (c.ReadSome(0.1, &closed)) response = c.ReadResponse(1);
  }
  const double seconds = SecondsSince(start);
  ExpectJsonError(response, 408, "timeout");
  EXPECT_GE(seconds, 0.4);
  EXPECT_LT(seconds, 1.5);
  EXPECT_EQ(server.handled, 0);
}

TEST(HttpFrontTest, SilentConnectionIsClosedAtTheIdleDeadline) {
  HttpFrontOptions o;
  o.idle_timeout_s = 0.3;
  FrontServer server(o);
  RawClient fresh(server.port());
  RawClient used(server.port());
  ASSERT_TRUE(used.Send(Get("/health")));
  ASSERT_EQ(StatusOf(used.ReadResponse()), 200);
  const auto start = Clock::now();
  bool closed = false;
  EXPECT_EQ(fresh.ReadUntilClosed(3, &closed), "");
  EXPECT_TRUE(closed);
  EXPECT_EQ(used.ReadUntilClosed(3, &closed), "");
  EXPECT_TRUE(closed);
  EXPECT_LT(SecondsSince(start), 1.5);
}

TEST(HttpFrontTest, ConnectionsAreCappedPerClientAddress) {
  HttpFrontOptions o;
  o.max_connections_per_ip = 4;
  FrontServer server(o);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 4; ++i) held.push_back(std::make_unique<RawClient>(server.port()));
  ASSERT_TRUE(WaitForConnections(server.front(), 4));
  RawClient fifth(server.port());
  const std::string refused = fifth.ReadResponse();
  ExpectJsonError(refused, 503, "overloaded");
  EXPECT_NE(refused.find("Retry-After: 1"), std::string::npos) << refused;
  bool closed = false;
  fifth.ReadUntilClosed(3, &closed);
  EXPECT_TRUE(closed);
  // One leaves: there is room again.
  held[0]->Close();
  ASSERT_TRUE(WaitForConnections(server.front(), 3));
  RawClient again(server.port());
  ASSERT_TRUE(again.Send(Get("/health")));
  EXPECT_EQ(StatusOf(again.ReadResponse()), 200);
}

TEST(HttpFrontTest, TotalCapEvictsTheLongestIdleConnectionOrRefuses) {
  HttpFrontOptions o;
  o.max_connections = 3;
  FrontServer server(o);
  {
    // Three connections in the middle of a head cannot be evicted: a fourth is refused.
    std::vector<std::unique_ptr<RawClient>> busy;
    for (int i = 0; i < 3; ++i) {
      busy.push_back(std::make_unique<RawClient>(server.port()));
      ASSERT_TRUE(busy.back()->Send("GET /health HTTP/1.1\r\n"));
    }
    ASSERT_TRUE(WaitForConnections(server.front(), 3));
    RawClient fourth(server.port());
    ExpectJsonError(fourth.ReadResponse(), 503, "overloaded");
  }
  ASSERT_TRUE(WaitForConnections(server.front(), 0));
  // Three idle connections: a fourth takes the place of the one idle the longest.
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<RawClient>(server.port()));
    ASSERT_TRUE(WaitForConnections(server.front(), i + 1));
  }
  RawClient fourth(server.port());
  ASSERT_TRUE(fourth.Send(Get("/health")));
  EXPECT_EQ(StatusOf(fourth.ReadResponse()), 200);
  bool closed = false;
  EXPECT_EQ(idle[0]->ReadUntilClosed(3, &closed), "");
  EXPECT_TRUE(closed) << "the oldest idle connection was not evicted";
  ASSERT_TRUE(idle[2]->Send(Get("/health")));
  EXPECT_EQ(StatusOf(idle[2]->ReadResponse()), 200);
}

TEST(HttpFrontTest, PipelinedRequestsAreAnsweredInOrderAndBodiesAreNeverRequests) {
  FrontServer server(HttpFrontOptions{});
  RawClient c(server.port());
  // A GET's body is read and dropped: the request line inside it is not a request.
  const std::string hidden = Get("/n?i=666");
  ASSERT_TRUE(c.Send(Get("/n?i=1") + "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
                     "GET /n?i=3 HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(hidden.size()) +
                     "\r\n\r\n" + hidden + "\r\n" + Get("/n?i=4")));
  EXPECT_EQ(BodyOf(c.ReadResponse()), "n=1");
  EXPECT_EQ(BodyOf(c.ReadResponse()), "echo:hello");
  EXPECT_EQ(BodyOf(c.ReadResponse()), "n=3");
  EXPECT_EQ(BodyOf(c.ReadResponse()), "n=4");
  // Nothing else comes, and the connection is still usable.
  bool closed = false;
  EXPECT_FALSE(c.ReadSome(0.3, &closed));
  ASSERT_TRUE(c.Send(Get("/n?i=5")));
  EXPECT_EQ(BodyOf(c.ReadResponse()), "n=5");
  EXPECT_EQ(server.handled, 5);
}

TEST(HttpFrontTest, EarlyRefusalWithAnUnreadBodyClosesTheConnection) {
  // A pre-routing refusal like the server's 401, which says Connection: close.
  FrontServer server(HttpFrontOptions{}, [](HttpFront& front) {
    front.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (req.path != "/private") return httplib::Server::HandlerResponse::Unhandled;
      res.status = 401;
      res.set_header("Connection", "close");
      res.set_content("{}", "application/json");
      return httplib::Server::HandlerResponse::Handled;
    });
  });
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /private HTTP/1.1\r\nHost: t\r\nContent-Length: 8192\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(c.Send(BodyWithRequestAt4KiB(Get("/n?i=666")) + Get("/n?i=667")));
  bool closed = false;
  const std::string all = c.ReadUntilClosed(3, &closed);
  EXPECT_TRUE(closed) << "Connection: close, but the connection stayed open";
  EXPECT_EQ(StatusOf(all), 401) << all;
  EXPECT_EQ(Count(all, "HTTP/1.1 "), 1u) << all;
  EXPECT_EQ(server.handled, 0);
}

TEST(HttpFrontTest, ExpectContinueIsAnsweredBeforeTheBody) {
  FrontServer server(HttpFrontOptions{});
  RawClient c(server.port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  bool closed = false;
  ASSERT_TRUE(c.ReadSome(2, &closed));
  ASSERT_FALSE(closed);
  ASSERT_TRUE(c.Send("ok"));
  const std::string all = c.ReadResponse();
  EXPECT_EQ(all.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << all;
  // Exactly one interim response, then the final one.
  EXPECT_EQ(Count(all, "HTTP/1.1 "), 1u) << all;
  const std::string final_response = c.ReadResponse();
  EXPECT_EQ(StatusOf(final_response), 200) << final_response;
  EXPECT_EQ(BodyOf(final_response), "echo:ok");
}

TEST(HttpFrontTest, StreamsWorkAndNoticeTheClientLeaving) {
  std::atomic<bool> released{false};
  std::atomic<int> written{0};
  FrontServer server(HttpFrontOptions{}, [&](HttpFront& front) {
    front.Get("/stream", [](const httplib::Request&, httplib::Response& res) {
      auto i = std::make_shared<int>(0);
      res.set_chunked_content_provider("text/event-stream", [i](size_t, httplib::DataSink& sink) {
        if (*i == 20) {
          sink.done();
          return true;
        }
        const std::string event = "data: " + std::to_string((*i)++) + "\n\n";
        return sink.write(event.data(), event.size());
      });
    });
    // Never ends on its own: only a client that leaves (or a stop) ends it.
    front.Get("/forever", [&](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider(
          "text/event-stream",
          [&](size_t, httplib::DataSink& sink) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            if (!sink.is_writable()) return false;
            ++written;
            return sink.write("data: x\n\n", 9);
          },
          [&](bool) { released = true; });
    });
  });
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/stream");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_EQ(Count(res->body, "data: "), 20u);
  EXPECT_NE(res->body.find("data: 19\n\n"), std::string::npos);

  RawClient c(server.port());
  ASSERT_TRUE(c.Send(Get("/forever")));
  bool closed = false;
  ASSERT_TRUE(c.ReadSome(3, &closed));
  c.Close();
  for (int i = 0; i < 300 && !released; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(released) << "the stream went on after its client left";
  const int at_release = written;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(written, at_release);
}

TEST(HttpFrontTest, StopDoesNotWaitForIdleHalfOpenOrStreamingConnections) {
  FrontServer server(HttpFrontOptions{}, [](HttpFront& front) {
    front.Get("/forever", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("text/event-stream", [](size_t, httplib::DataSink& sink) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return sink.write("data: x\n\n", 9);
      });
    });
  });
  RawClient fresh(server.port());
  RawClient half_head(server.port());
  ASSERT_TRUE(half_head.Send("GET /health HTTP/1.1\r\nHost: t\r\n"));
  RawClient half_body(server.port());
  ASSERT_TRUE(half_body.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"));
  RawClient kept(server.port());
  ASSERT_TRUE(kept.Send(Get("/health")));
  ASSERT_EQ(StatusOf(kept.ReadResponse()), 200);
  RawClient streaming(server.port());
  ASSERT_TRUE(streaming.Send(Get("/forever")));
  bool closed = false;
  ASSERT_TRUE(streaming.ReadSome(3, &closed));
  ASSERT_TRUE(WaitForConnections(server.front(), 5));
  EXPECT_LT(server.Stop(), 1.0);
  for (RawClient* c : {&fresh, &half_head, &half_body, &kept, &streaming}) {
    c->ReadUntilClosed(3, &closed);
    EXPECT_TRUE(closed);
  }
  EXPECT_EQ(server.front().connections(), 0);
}

TEST(HttpFrontTest, StopBeforeServeReturnsAtOnce) {
  HttpFront front;
  ASSERT_TRUE(front.Configure(HttpFrontOptions{}).ok());
  ASSERT_GT(front.bind_to_any_port("127.0.0.1"), 0);
  front.Stop();
  const auto start = Clock::now();
  EXPECT_TRUE(front.Serve().ok());
  EXPECT_LT(SecondsSince(start), 0.5);
}

// Through the real Server: a tiny model, API keys, the real routes.
constexpr char kReadKey[] = "read-key-front-0123456789";

class HttpFrontServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    std::string out;
    ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir_->path(), /*steps=*/2));
    ASSERT_EQ(testing::RunCommand(std::string(MNEMO_BINARY) + " init --state " + dir_->File("state") + " --model " +
                                      dir_->File("model"), &out), 0) << out;
    testing::WriteFileOrDie(dir_->File("keys"), std::string("read ") + kReadKey + "\n");
  }
  static void TearDownTestSuite() { delete dir_; }

  // Starts a server with `http_threads` connection threads; waits until it is ready.
  void Start(int http_threads = 16) {
    ServeOptions o;
    o.state = dir_->File("state");
    o.port = 0;
    o.api_key_file = dir_->File("keys");
    o.http_threads = http_threads;
    o.log_requests = false;
    server_ = std::make_unique<Server>(o);
    Status s = server_->Bind(&port_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    thread_ = std::thread([this] { run_status_ = server_->Run(); });
    for (int i = 0; i < 600 && !server_->ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(server_->ready());
  }
  // Stops the server; returns how long Stop() and Run() took.
  double StopServer() {
    const auto start = Clock::now();
    server_->Stop();
    thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_.ToString();
    return SecondsSince(start);
  }
  void TearDown() override {
    if (thread_.joinable()) StopServer();
  }

  static testing::ScratchDir* dir_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  Status run_status_;
  int port_ = 0;
};
testing::ScratchDir* HttpFrontServerTest::dir_ = nullptr;

TEST_F(HttpFrontServerTest, UnauthorizedBodyIsNeverTakenForARequest) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // /health needs no key, so a smuggled /health would be answered 200 if it were ever parsed.
  RawClient c(port_);
  ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: 8192\r\n\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(c.Send(BodyWithRequestAt4KiB(Get("/health")) + Get("/health")));
  bool closed = false;
  const std::string all = c.ReadUntilClosed(5, &closed);
  EXPECT_TRUE(closed) << "the 401 said Connection: close but the connection stayed open";
  EXPECT_EQ(Count(all, "HTTP/1.1 "), 1u) << all;
  ExpectJsonError(all, 401, "authentication_error");
}

TEST_F(HttpFrontServerTest, CompletionBodiesAreCutWhateverTheirFraming) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string auth = std::string("Authorization: Bearer ") + kReadKey + "\r\n";
  const std::string bomb = GzipOfZeros(size_t{100} << 20);
  const size_t before = ResidentBytes();
  {
    RawClient c(port_);
    ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: t\r\n" + auth +
                       "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"));
    ChunkedFlood flood(c.fd(), size_t{100} << 20);
    ExpectJsonError(c.ReadResponse(5), 413, "invalid_request_error");
    EXPECT_LT(flood.Join(), size_t{32} << 20);
  }
  {
    RawClient c(port_);
    ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: t\r\n" + auth +
                       "Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: " +
                       std::to_string(bomb.size()) + "\r\n\r\n" + bomb));
    ExpectJsonError(c.ReadResponse(5), 415, "invalid_request_error");
  }
  const size_t after = ResidentBytes();
  EXPECT_LT(after, before + (size_t{32} << 20)) << "resident memory grew by " << (after - before) / 1e6 << " MB";
  // A proper request on the same server still works.
  RawClient ok(port_);
  const std::string request = R"({"model": "model", "prompt": "The cat", "max_tokens": 2})";
  ASSERT_TRUE(ok.Send("POST /v1/completions HTTP/1.1\r\nHost: t\r\n" + auth + "Content-Type: application/json\r\n"
                      "Content-Length: " + std::to_string(request.size()) + "\r\n\r\n" + request));
  const std::string response = ok.ReadResponse(30);
  EXPECT_EQ(StatusOf(response), 200) << response;
}

TEST_F(HttpFrontServerTest, HealthAnswersAndStopIsQuickWhileHeadersHang) {
  ASSERT_NO_FATAL_FAILURE(Start(/*http_threads=*/16));
  std::vector<std::unique_ptr<RawClient>> hanging;
  for (int i = 0; i < 20; ++i) {
    hanging.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(hanging.back()->Send("GET /health HTTP/1.1\r\nHost: t\r\n"));
  }
  for (int i = 0; i < 3; ++i) {
    RawClient c(port_);
    const auto start = Clock::now();
    ASSERT_TRUE(c.Send(Get("/health")));
    const std::string response = c.ReadResponse(5);
    EXPECT_EQ(StatusOf(response), 200) << response;
    EXPECT_LT(SecondsSince(start), 1.0);
  }
  // Half-open connections are not in flight: Stop() does not wait for them.
  EXPECT_LT(StopServer(), 2.0);
}

}  // namespace
}  // namespace mnemo
