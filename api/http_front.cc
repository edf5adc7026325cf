// HttpFront: the reactor that reads requests, the workers that answer them (api/http_front.h).
#include "api/http_front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>

namespace mnemo {
namespace {

using Clock = std::chrono::steady_clock;

// After a final answer the connection is half-closed and what the client still sends is read and dropped,
// for at most this long and this many bytes, then it is closed. Closing at once with unread bytes pending
// would reset the connection, and a reset can destroy the answer before it reaches the client (which
// typically sends its whole body before it reads anything).
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 4 << 20;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string FormatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", s);
  return buf;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpaceOrTab(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpaceOrTab(s.back())) s.remove_suffix(1);
  return s;
}

// The comma-separated elements of a header value, trimmed, empty ones dropped.
std::vector<std::string_view> ListElements(std::string_view value) {
  std::vector<std::string_view> out;
  while (!value.empty()) {
    const size_t comma = value.find(',');
    const std::string_view element = Trim(value.substr(0, comma));
    if (!element.empty()) out.push_back(element);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return out;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// A complete response in the server's error shape that closes the connection.
std::string ErrorResponse(int status, const std::string& message, const std::string& type) {
  nlohmann::ordered_json error = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  // The message may quote the client's bytes (a Content-Encoding), which need not be UTF-8: replaced, never
  // thrown (an exception here would end the reactor thread and the server; fuzz/http_front_fuzz).
  const std::string body =
      nlohmann::ordered_json{{"error", error}}.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) +
      "\n";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + ReasonPhrase(status) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n";
  if (status == 503) out += "Retry-After: 1\r\n";
  return out + "\r\n" + body;
}

// For short answers on a socket with room to spare (errors, 100 Continue): a client that is not reading
// loses them, which is all it can expect.
void SendBestEffort(int fd, const std::string& data) {
  if (::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
  }
}

void AddressOf(const sockaddr_storage& addr, std::string* ip, int* port) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    *port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    *port = ntohs(a->sin6_port);
  }
  *ip = buf;
}

struct Refusal {
  int status = 0;
  std::string message;
  std::string type = "invalid_request_error";
};

// What the front needs to know of a request head, and the head cpp-httplib will see.
struct Head {
  std::string rewritten;  // request line and headers without framing headers, each line ending in CRLF
  bool chunked = false;
  uint64_t length = 0;    // Content-Length when not chunked
  bool expect_continue = false;
};

// Parses `head` (the bytes before the blank line). Content-Length, Transfer-Encoding, Content-Encoding
// and "Expect: 100-continue" are consumed here and left out of out->rewritten: the front delimits the
// body and answers 100 Continue itself, and cpp-httplib then sees a single Content-Length.
bool ParseHead(std::string_view head, size_t max_body, Head* out, Refusal* refusal) {
  auto bad = [&](int status, std::string message) {
    refusal->status = status;
    refusal->message = std::move(message);
    return false;
  };
  *out = Head();
  // cpp-httplib splits lines at LF alone; refusing lone CRs and LFs (and NULs, which end its C strings)
  // keeps it from ever seeing other headers than the ones read here.
  for (size_t i = 0; i < head.size(); ++i) {
    const char c = head[i];
    if (c == '\0' || (c == '\n' && (i == 0 || head[i - 1] != '\r')) ||
        (c == '\r' && (i + 1 == head.size() || head[i + 1] != '\n'))) {
      return bad(400, "malformed request head (a NUL, or a CR or LF outside a CRLF)");
    }
  }
  bool has_length = false;
  std::string transfer_encoding;
  size_t start = 0;
  for (int line_no = 0; start <= head.size(); ++line_no) {
    size_t end = head.find("\r\n", start);
    if (end == std::string_view::npos) end = head.size();
    const std::string_view line = head.substr(start, end - start);
    start = end + 2;
    if (line_no == 0) {  // the request line: cpp-httplib parses and checks it
      out->rewritten.append(line).append("\r\n");
      continue;
    }
    if (line.empty() || IsSpaceOrTab(line.front())) return bad(400, "malformed request head (obsolete line folding)");
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad(400, "malformed header line (no field name)");
    const std::string_view name = line.substr(0, colon);
    if (std::any_of(name.begin(), name.end(), IsSpaceOrTab)) {
      return bad(400, "malformed header line (space in the field name)");
    }
    const std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsNoCase(name, "Content-Length")) {
      if (value.empty() || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return bad(400, "Content-Length must be a decimal number");
      }
      // More than 18 digits is more than any limit (and than uint64_t holds, from 20 on).
      const uint64_t length = value.size() > 18 ? UINT64_MAX : std::stoull(std::string(value));
      if (has_length && length != out->length) return bad(400, "two different Content-Length headers");
      has_length = true;
      out->length = length;
    } else if (EqualsNoCase(name, "Transfer-Encoding")) {
      transfer_encoding.append(transfer_encoding.empty() ? "" : ",").append(value);
    } else if (EqualsNoCase(name, "Content-Encoding")) {
      for (std::string_view coding : ListElements(value)) {
        if (!EqualsNoCase(coding, "identity")) {
          return bad(415, "Content-Encoding " + std::string(coding) +
                              ": compressed request bodies are not accepted; send the body uncompressed");
        }
      }
    } else if (EqualsNoCase(name, "Expect") && EqualsNoCase(value, "100-continue")) {
      out->expect_continue = true;
    } else {
      out->rewritten.append(line).append("\r\n");
    }
  }
  if (!transfer_encoding.empty()) {
    const std::vector<std::string_view> codings = ListElements(transfer_encoding);
    if (codings.empty() || !EqualsNoCase(codings.back(), "chunked")) {
      return bad(400, "Transfer-Encoding must end with chunked");
    }
    if (codings.size() > 1) {
      return bad(415, "Transfer-Encoding " + transfer_encoding + ": compressed request bodies are not accepted");
    }
    // A proxy may take either header for the body's length; accepting both would let the two disagree.
    if (has_length) return bad(400, "both Content-Length and Transfer-Encoding");
    out->chunked = true;
  } else if (has_length && out->length > max_body) {
    return bad(413, "request body exceeds " + std::to_string(max_body) + " bytes");
  }
  return true;
}

// Decodes a chunked body as it arrives (RFC 9112 section 7.1). Chunk extensions and trailer fields are
// read and dropped. The limit is checked against each chunk's announced size, before its data is read.
class ChunkedDecoder {
 public:
  enum class Result { kMore, kDone, kBad, kTooLarge };
  ChunkedDecoder(size_t max_body, size_t max_line) : max_body_(max_body), max_line_(max_line) {}

  // Consumes bytes of `in` from *pos on, appending data to *body.
  Result Feed(const std::string& in, size_t* pos, std::string* body) {
    for (;;) {
      switch (state_) {
        case State::kSize: {
          const size_t eol = in.find("\r\n", *pos);
          if (eol == std::string::npos) return in.size() - *pos > max_line_ ? Result::kBad : Result::kMore;
          if (eol - *pos > max_line_) return Result::kBad;
          const std::string_view line(in.data() + *pos, eol - *pos);
          uint64_t size = 0;
          size_t digits = 0;
          for (; digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits])); ++digits) {
            if (digits == 15) return Result::kTooLarge;  // 16 hex digits: more than any limit
            const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(line[digits])));
            size = size * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
          }
          const std::string_view rest = Trim(line.substr(digits));
          if (digits == 0 || (!rest.empty() && rest.front() != ';')) return Result::kBad;
          *pos = eol + 2;
          if (size == 0) {
            state_ = State::kTrailer;
          } else if (size > max_body_ - body->size()) {
            return Result::kTooLarge;
          } else {
            left_ = size;
            state_ = State::kData;
          }
          break;
        }
        case State::kData: {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(left_, in.size() - *pos));
          if (n == 0) return Result::kMore;
          body->append(in, *pos, n);
          *pos += n;
          left_ -= n;
          if (left_ == 0) state_ = State::kDataEnd;
          break;
        }
        case State::kDataEnd:
          if (in.size() - *pos < 2) return Result::kMore;
          if (in.compare(*pos, 2, "\r\n") != 0) return Result::kBad;
          *pos += 2;
          state_ = State::kSize;
          break;
        case State::kTrailer: {
          const size_t eol = in.find("\r\n", *pos);
          if (eol == std::string::npos) return trailer_ + in.size() - *pos > max_line_ ? Result::kBad : Result::kMore;
          trailer_ += eol + 2 - *pos;
          if (trailer_ > max_line_) return Result::kBad;
          const bool blank = eol == *pos;
          *pos = eol + 2;
          if (blank) return Result::kDone;
          break;
        }
      }
    }
  }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer };
  size_t max_body_;
  size_t max_line_;
  State state_ = State::kSize;
  uint64_t left_ = 0;   // bytes of the current chunk still to come
  size_t trailer_ = 0;  // trailer bytes so far
};

}  // namespace

struct HttpFront::Conn {
  enum class Phase {
    kIdle,    // waiting for a request's first byte (until idle deadline)
    kHead,    // reading a head (header deadline)
    kBody,    // reading a body (body deadline)
    kBusy,    // at a worker; not watched by the reactor
    kLinger,  // half-closed after a final answer; dropping what still comes (linger deadline)
  };
  int fd = -1;
  std::string ip;
  int port = 0;
  Phase phase = Phase::kIdle;
  Clock::time_point deadline;
  Clock::time_point idle_since;
  std::string in;      // received and not consumed: the request being read, then anything pipelined
  size_t scanned = 0;  // `in` has no blank line before this offset
  Head head;
  ChunkedDecoder chunks{0, 0};
  std::string body;
  std::string request;  // the complete request handed to a worker
  size_t dropped = 0;   // bytes read and dropped while lingering
  int served = 0;
  bool keep_alive = false;  // set by the worker: the connection may carry another request
};

// One request, from memory, to cpp-httplib; its response, to the socket.
class HttpFront::RequestStream : public httplib::Stream {
 public:
  RequestStream(const Conn& c, double write_timeout_s) : c_(c), write_timeout_(Seconds(write_timeout_s)) {}

  bool is_readable() const override { return pos_ < c_.request.size(); }

  // Streaming handlers ask this to notice a client that went away.
  bool is_writable() const override {
    if (failed_) return false;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(write_timeout_).count();
    pollfd p{c_.fd, POLLOUT, 0};
    int n;
    do {
      n = ::poll(&p, 1, static_cast<int>(ms));
    } while (n < 0 && errno == EINTR);
    return n > 0 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP));
  }

  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, c_.request.size() - pos_);
    std::memcpy(ptr, c_.request.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  // Writes everything or fails: one deadline for the whole call, so a client reading a byte now and then
  // cannot hold the worker longer than write_timeout_s per write.
  ssize_t write(const char* ptr, size_t size) override {
    if (failed_) return -1;
    if (!head_seen_) NoteHead(std::string_view(ptr, size));
    const auto deadline = Clock::now() + write_timeout_;
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::send(c_.fd, ptr + done, size - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && left > 0) {
        pollfd p{c_.fd, POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left) + 1);
        continue;
      }
      failed_ = true;
      return -1;
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.ip;
    port = c_.port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    port = 0;
    ip.clear();
    if (::getsockname(c_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) AddressOf(addr, &ip, &port);
  }
  socket_t socket() const override { return c_.fd; }

  bool failed() const { return failed_; }
  // The response said "Connection: close" (a handler may set it, e.g. when refusing a request).
  bool said_close() const { return said_close_; }

 private:
  // cpp-httplib writes a response's status line and headers in one write, before anything else.
  void NoteHead(std::string_view data) {
    head_seen_ = true;
    data = data.substr(0, data.find("\r\n\r\n"));
    size_t start = data.find("\r\n");
    while (start != std::string_view::npos) {
      start += 2;
      const size_t end = data.find("\r\n", start);
      const std::string_view line = data.substr(start, end == std::string_view::npos ? end : end - start);
      const size_t colon = line.find(':');
      if (colon != std::string_view::npos && EqualsNoCase(line.substr(0, colon), "Connection")) {
        for (std::string_view option : ListElements(line.substr(colon + 1))) {
          if (EqualsNoCase(option, "close")) said_close_ = true;
        }
      }
      start = end;
    }
  }

  const Conn& c_;
  const Clock::duration write_timeout_;
  size_t pos_ = 0;
  bool head_seen_ = false;
  bool said_close_ = false;
  bool failed_ = false;
};

HttpFront::HttpFront()
    : epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      read_buf_(64 << 10) {}

HttpFront::~HttpFront() {
  Stop();
  CloseListener();
  for (auto& kv : conns_) ::close(kv.first);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

bool HttpFront::bind_to_port(const std::string& host, int port, int socket_flags) {
  return httplib::Server::bind_to_port(host, port, socket_flags) && ::listen(svr_sock_, 511) == 0;
}

int HttpFront::bind_to_any_port(const std::string& host, int socket_flags) {
  const int port = httplib::Server::bind_to_any_port(host, socket_flags);
  return port > 0 && ::listen(svr_sock_, 511) == 0 ? port : -1;
}

Status HttpFront::Configure(const HttpFrontOptions& o, RefusalListener on_refusal) {
  if (o.threads < 1) return Status::InvalidArgument("HTTP threads must be at least 1");
  if (o.max_connections < 1 || o.max_connections_per_ip < 1 || o.max_requests_per_connection < 1) {
    return Status::InvalidArgument("connection limits must be at least 1");
  }
  for (double t : {o.header_timeout_s, o.body_timeout_s, o.idle_timeout_s, o.write_timeout_s}) {
    if (!(t > 0) || t > 1e6) return Status::InvalidArgument("HTTP timeouts must be in (0, 1e6] seconds");
  }
  if (o.max_header_bytes < 256) return Status::InvalidArgument("the header limit must be at least 256 bytes");
  options_ = o;
  on_refusal_ = std::move(on_refusal);
  set_payload_max_length(o.max_body_bytes);
  // What cpp-httplib writes in its Keep-Alive header; the reactor enforces both.
  keep_alive_max_count_ = static_cast<size_t>(o.max_requests_per_connection);
  keep_alive_timeout_sec_ = static_cast<time_t>(o.idle_timeout_s);
  return Status::OK();
}

void HttpFront::Stop() {
  stopping_ = true;
  const uint64_t one = 1;
  if (wake_fd_ >= 0 && ::write(wake_fd_, &one, sizeof(one)) < 0) {
  }
}

void HttpFront::CloseListener() {
  // cpp-httplib's streaming writers poll svr_sock_ to see a shutdown, so it becomes invalid here too.
  const socket_t sock = svr_sock_.exchange(INVALID_SOCKET);
  if (sock != INVALID_SOCKET) {
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }
}

Status HttpFront::Serve() {
  const socket_t listener = svr_sock_;
  if (listener == INVALID_SOCKET) return Status::FailedPrecondition("HttpFront::Serve: no bound socket");
  if (epoll_fd_ < 0 || wake_fd_ < 0) return Status::IOError("HttpFront: cannot create epoll or eventfd descriptors");
  if (stopping_) {
    CloseListener();
    return Status::OK();
  }
  ::fcntl(listener, F_SETFL, ::fcntl(listener, F_GETFL) | O_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listener, &ev);
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });

  Status result;
  std::vector<epoll_event> events(128);
  for (;;) {
    if (stopping_ && !stopped_) BeginStop();
    if (stopped_ && busy_.empty()) break;
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), NextTimeoutMs());
    if (n < 0 && errno != EINTR) {
      result = Status::IOError(std::string("epoll_wait: ") + std::strerror(errno));
      stopping_ = true;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        if (::read(wake_fd_, &count, sizeof(count)) < 0) {
        }
      } else if (fd == listener) {
        if (!stopped_) Accept();
      } else {
        OnReadable(fd);
      }
    }
    TakeBack();
    Expire();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers_exit_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  return result;
}

int HttpFront::NextTimeoutMs() const {
  const auto now = Clock::now();
  auto next = now + std::chrono::seconds(1);
  for (const auto& kv : conns_) next = std::min(next, kv.second->deadline);
  if (accept_paused_) next = std::min(next, accept_resume_);
  if (next <= now) return 0;
  return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count()) + 1;
}

void HttpFront::Accept() {
  const socket_t listener = svr_sock_;
  for (;;) {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    const int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The pending connection keeps the listener readable: stop watching it for a moment instead of
        // spinning until a descriptor is free.
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listener, nullptr);
        accept_paused_ = true;
        accept_resume_ = Clock::now() + std::chrono::milliseconds(100);
        if (on_refusal_) on_refusal_(503, std::string("accept: ") + std::strerror(errno), "");
      }
      return;
    }
    std::string ip;
    int port = 0;
    AddressOf(addr, &ip, &port);
    // A response goes out in two writes (head, body); Nagle + delayed ACK would add ~40 ms.
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto turn_away = [&](const std::string& why) {
      if (on_refusal_) on_refusal_(503, why, ip);
      SendBestEffort(fd, ErrorResponse(503, why, "overloaded"));
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
    };
    const auto from_ip = per_ip_.find(ip);
    if (from_ip != per_ip_.end() && from_ip->second >= options_.max_connections_per_ip) {
      turn_away("too many connections from " + ip + " (at most " +
                std::to_string(options_.max_connections_per_ip) + ")");
      continue;
    }
    if (open_ >= options_.max_connections && !EvictIdle()) {
      turn_away("too many connections (at most " + std::to_string(options_.max_connections) + ")");
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->ip = ip;
    c->port = port;
    c->idle_since = Clock::now();
    c->deadline = c->idle_since + Seconds(options_.idle_timeout_s);
    ++per_ip_[ip];
    ++open_;
    conns_[fd] = std::move(c);
  }
}

// Closes the connection idle the longest (between requests, no bytes of a next one), if any.
bool HttpFront::EvictIdle() {
  Conn* oldest = nullptr;
  for (auto& kv : conns_) {
    Conn& c = *kv.second;
    if (c.phase == Conn::Phase::kIdle && c.in.empty() && (oldest == nullptr || c.idle_since < oldest->idle_since)) {
      oldest = &c;
    }
  }
  if (oldest == nullptr) return false;
  Close(oldest->fd);
  return true;
}

void HttpFront::OnReadable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;  // handed to a worker earlier in this batch
  Conn& c = *it->second;
  const ssize_t n = ::recv(fd, read_buf_.data(), read_buf_.size(), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) return Close(fd);  // the client closed or reset: nothing (more) to answer
  if (c.phase == Conn::Phase::kLinger) {
    c.dropped += static_cast<size_t>(n);
    if (c.dropped > kLingerBytes) Close(fd);
    return;
  }
  c.in.append(read_buf_.data(), static_cast<size_t>(n));
  Advance(c);
}

// Moves a connection through its request as far as the bytes received allow.
void HttpFront::Advance(Conn& c) {
  for (;;) {
    const auto now = Clock::now();
    switch (c.phase) {
      case Conn::Phase::kIdle: {
        // Empty lines before a request line are allowed (RFC 9112 section 2.2).
        size_t skip = 0;
        while (c.in.compare(skip, 2, "\r\n") == 0) skip += 2;
        c.in.erase(0, skip);
        if (c.in.empty() || c.in == "\r") return;
        c.phase = Conn::Phase::kHead;
        c.scanned = 0;
        c.deadline = now + Seconds(options_.header_timeout_s);
        break;
      }
      case Conn::Phase::kHead: {
        const size_t end = c.in.find("\r\n\r\n", c.scanned >= 3 ? c.scanned - 3 : 0);
        if (end == std::string::npos ? c.in.size() > options_.max_header_bytes : end + 4 > options_.max_header_bytes) {
          return Refuse(c, 431, "request head exceeds " + std::to_string(options_.max_header_bytes) + " bytes",
                        "invalid_request_error");
        }
        if (end == std::string::npos) {
          c.scanned = c.in.size();
          return;
        }
        Refusal refusal;
        if (!ParseHead(std::string_view(c.in).substr(0, end), options_.max_body_bytes, &c.head, &refusal)) {
          return Refuse(c, refusal.status, refusal.message, refusal.type);
        }
        c.in.erase(0, end + 4);
        c.body.clear();
        c.chunks = ChunkedDecoder(options_.max_body_bytes, options_.max_header_bytes);
        c.phase = Conn::Phase::kBody;
        c.deadline = now + Seconds(options_.body_timeout_s);
        if (c.head.expect_continue && c.in.empty() && (c.head.chunked || c.head.length > 0)) {
          SendBestEffort(c.fd, "HTTP/1.1 100 Continue\r\n\r\n");
        }
        break;
      }
      case Conn::Phase::kBody: {
        if (c.head.chunked) {
          size_t pos = 0;
          const ChunkedDecoder::Result r = c.chunks.Feed(c.in, &pos, &c.body);
          c.in.erase(0, pos);
          if (r == ChunkedDecoder::Result::kMore) return;
          if (r == ChunkedDecoder::Result::kBad) {
            return Refuse(c, 400, "malformed chunked body", "invalid_request_error");
          }
          if (r == ChunkedDecoder::Result::kTooLarge) {
            return Refuse(c, 413, "request body exceeds " + std::to_string(options_.max_body_bytes) + " bytes",
                          "invalid_request_error");
          }
        } else {
          if (c.in.size() < c.head.length) return;
          c.body.assign(c.in, 0, static_cast<size_t>(c.head.length));
          c.in.erase(0, static_cast<size_t>(c.head.length));
        }
        return Dispatch(c);
      }
      case Conn::Phase::kBusy:
      case Conn::Phase::kLinger:
        return;
    }
  }
}

void HttpFront::Dispatch(Conn& c) {
  c.request = std::move(c.head.rewritten);
  c.request += "Content-Length: " + std::to_string(c.body.size()) + "\r\n\r\n";
  c.request += c.body;
  c.body = std::string();
  c.phase = Conn::Phase::kBusy;
  const int fd = c.fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  auto node = conns_.extract(fd);
  busy_.insert(fd);
  {
    std::lock_guard<std::mutex> lock(mu_);
    work_.push_back(std::move(node.mapped()));
  }
  work_ready_.notify_one();
}

void HttpFront::Refuse(Conn& c, int status, const std::string& message, const std::string& type) {
  if (on_refusal_) on_refusal_(status, message, c.ip);
  SendBestEffort(c.fd, ErrorResponse(status, message, type));
  Linger(c);
}

// Half-closes: the client sees the answer and the end of the stream; what it still sends is dropped
// (kLingerTime, kLingerBytes), never taken for a request.
void HttpFront::Linger(Conn& c) {
  ::shutdown(c.fd, SHUT_WR);
  c.phase = Conn::Phase::kLinger;
  c.in = std::string();
  c.body = std::string();
  c.dropped = 0;
  c.deadline = Clock::now() + kLingerTime;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = c.fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) != 0 && ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
    Close(c.fd);
  }
}

void HttpFront::Close(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  ::close(fd);  // also leaves the epoll set
  auto ip = per_ip_.find(it->second->ip);
  if (ip != per_ip_.end() && --ip->second <= 0) per_ip_.erase(ip);
  --open_;
  conns_.erase(it);
}

// Connections the workers have answered: closed, half-closed, or watched for their next request.
void HttpFront::TakeBack() {
  std::vector<std::unique_ptr<Conn>> back;
  {
    std::lock_guard<std::mutex> lock(mu_);
    back.swap(done_);
  }
  for (auto& owned : back) {
    Conn& c = *owned;
    const int fd = c.fd;
    busy_.erase(fd);
    conns_[fd] = std::move(owned);
    if (stopped_) {
      Close(fd);
    } else if (!c.keep_alive) {
      Linger(c);
    } else {
      c.phase = Conn::Phase::kIdle;
      c.idle_since = Clock::now();
      c.deadline = c.idle_since + Seconds(options_.idle_timeout_s);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        Close(fd);
      } else {
        Advance(c);  // a pipelined request may be buffered already
      }
    }
  }
}

void HttpFront::Expire() {
  const auto now = Clock::now();
  if (accept_paused_ && !stopped_ && now >= accept_resume_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = svr_sock_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev);
    accept_paused_ = false;
  }
  std::vector<int> due;
  for (const auto& kv : conns_) {
    if (kv.second->deadline <= now) due.push_back(kv.first);
  }
  for (int fd : due) {
    Conn& c = *conns_.at(fd);
    if (c.phase == Conn::Phase::kHead) {
      Refuse(c, 408, "the request head did not arrive within " + FormatSeconds(options_.header_timeout_s) + " s",
             "timeout");
    } else if (c.phase == Conn::Phase::kBody) {
      Refuse(c, 408, "the request body did not arrive within " + FormatSeconds(options_.body_timeout_s) + " s",
             "timeout");
    } else {
      Close(fd);  // idle, or lingering
    }
  }
}

void HttpFront::BeginStop() {
  stopped_ = true;
  CloseListener();
  std::vector<int> fds;
  for (const auto& kv : conns_) fds.push_back(kv.first);
  for (int fd : fds) Close(fd);
  // A response still being written (a stream outliving the caller's drain) fails at its next write.
  for (int fd : busy_) ::shutdown(fd, SHUT_RDWR);
}

void HttpFront::WorkerLoop() {
  for (;;) {
    std::unique_ptr<Conn> c;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [this] { return workers_exit_ || !work_.empty(); });
      if (work_.empty()) return;
      c = std::move(work_.front());
      work_.pop_front();
    }
    c->keep_alive = false;
    if (!stopping_) {  // after Stop() no handler starts: its answer could not be delivered
      const bool last = c->served + 1 >= options_.max_requests_per_connection;
      bool closed = false;
      bool ok = false;
      RequestStream stream(*c, options_.write_timeout_s);
      try {
        ok = process_request(stream, last, closed, nullptr);
      } catch (...) {
        ok = false;
      }
      ++c->served;
      c->keep_alive = ok && !closed && !last && !stream.failed() && !stream.said_close();
    }
    c->request = std::string();
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(std::move(c));
    }
    const uint64_t one = 1;
    if (::write(wake_fd_, &one, sizeof(one)) < 0) {
    }
  }
}

}  // namespace mnemo
