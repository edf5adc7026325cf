// HttpFront: cpp-httplib's server with connection handling of its own in front, so that slow or idle
// clients cannot hold the threads that run handlers, and no request body larger than the limit is ever
// read into memory, however it is framed.
//
// cpp-httplib alone gives each connection a thread for its whole life, reads chunked (and inflates
// compressed) bodies of any size, and times out per recv(), so a client that sends a byte every few
// seconds keeps its thread forever. Here one reactor thread (epoll, non-blocking sockets) accepts
// connections and reads each request completely before any handler sees it:
//   - the head: at most max_header_bytes, complete within header_timeout_s of its first byte (431, 408);
//   - the body: Content-Length, or chunked and decoded as it arrives, cut as soon as it would pass
//     max_body_bytes (413), complete within body_timeout_s of the end of the head (408);
//   - a Content-Encoding other than identity, or a transfer coding other than chunked, is refused (415):
//     compressed bodies are not inflated at all, so no decompression bomb can get past the limit;
//   - framing a proxy could read differently (Content-Length with Transfer-Encoding, two different
//     Content-Lengths, obsolete line folding, bare CR or LF) is a 400.
// The complete request, rewritten to a single Content-Length, then goes to a pool of `threads` workers,
// which run it through httplib::Server::process_request (pre-routing, routing, handlers, logger) over an
// in-memory stream whose writes go to the socket, each within write_timeout_s. Pipelined bytes stay
// with the connection. After the response a keep-alive connection is back with the reactor, holding no
// thread, until its next request starts (within idle_timeout_s) or it is closed.
//
// Connections are capped per client address and in total: past a cap the newcomer gets 503 (the total
// cap first closes the connection idle the longest, if there is one). A refusal by the front, and any
// response that says "Connection: close", is followed by a half-close: nothing more is answered on that
// connection; what the client still sends is read and dropped (at most 4 MiB, for at most 2 s) so that
// it gets to read the answer, then the connection is closed.
//
// Errors the front writes itself have the server's JSON shape {"error": {"message", "type", "param",
// "code"}}.
//
// Thread-safety: Configure() and the httplib setters before Serve(); Stop() and connections() from any
// thread at any time (a Stop() before Serve() makes Serve() return at once).
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "util/status.h"

namespace mnemo {

struct HttpFrontOptions {
  int threads = 16;                       // workers: run handlers and write responses
  size_t max_header_bytes = 8 << 10;      // request line and headers (and, separately, chunked trailers)
  size_t max_body_bytes = 1 << 20;        // decoded body
  double header_timeout_s = 10;           // first byte of a request -> end of its head
  double body_timeout_s = 30;             // end of the head -> end of the body
  double idle_timeout_s = 5;              // accept or end of a response -> first byte of the next request
  double write_timeout_s = 30;            // each write of a response (a whole non-streamed body is one)
  int max_connections = 512;
  int max_connections_per_ip = 64;
  int max_requests_per_connection = 1000;
};

class HttpFront : public httplib::Server {
 public:
  // Told of every refusal by the front itself (status, reason, client address), on the reactor thread.
  using RefusalListener = std::function<void(int status, const std::string& reason, const std::string& ip)>;

  HttpFront();
  ~HttpFront() override;
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // As cpp-httplib's, with a listen backlog of 511 instead of its 5 (past the backlog a burst of clients
  // sees its SYNs dropped and retried a second later).
  bool bind_to_port(const std::string& host, int port, int socket_flags = 0);
  int bind_to_any_port(const std::string& host, int socket_flags = 0);
  // Before Serve(). Also sets cpp-httplib's payload limit and the Keep-Alive header it writes.
  Status Configure(const HttpFrontOptions& options, RefusalListener on_refusal = {});
  // Serves the socket bound by bind_to_port / bind_to_any_port on the calling thread until Stop().
  // On return every connection is closed and the workers are joined.
  Status Serve();
  // Stops accepting, closes every connection not being answered at once (idle, half-read) and cuts the
  // ones being answered (callers that want in-flight requests to finish wait for them first).
  void Stop();
  int connections() const { return open_; }

 private:
  // cpp-httplib's own serving loop and its stop() (which does nothing unless that loop runs): Serve()
  // and Stop() replace them.
  using httplib::Server::is_running;
  using httplib::Server::listen;
  using httplib::Server::listen_after_bind;
  using httplib::Server::stop;

  struct Conn;
  class RequestStream;
  using Clock = std::chrono::steady_clock;

  void Accept();
  bool EvictIdle();
  void OnReadable(int fd);
  void Advance(Conn& c);
  void Dispatch(Conn& c);
  void Refuse(Conn& c, int status, const std::string& message, const std::string& type);
  void Linger(Conn& c);
  void Close(int fd);
  void TakeBack();
  void Expire();
  void BeginStop();
  void CloseListener();
  int NextTimeoutMs() const;
  void WorkerLoop();

  HttpFrontOptions options_;
  RefusalListener on_refusal_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop() and workers handing connections back wake the reactor
  std::atomic<bool> stopping_{false};
  std::atomic<int> open_{0};

  // Reactor thread only.
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;  // connections not at a worker
  std::unordered_set<int> busy_;                          // sockets of connections at a worker
  std::unordered_map<std::string, int> per_ip_;           // open connections by client address
  bool stopped_ = false;
  bool accept_paused_ = false;  // out of file descriptors: accepting resumes at accept_resume_
  Clock::time_point accept_resume_;
  std::vector<char> read_buf_;

  // Shared by the reactor and the workers.
  std::mutex mu_;
  std::condition_variable work_ready_;
  std::deque<std::unique_ptr<Conn>> work_;  // guarded by mu_: complete requests waiting for a worker
  std::vector<std::unique_ptr<Conn>> done_;  // guarded by mu_: answered, back to the reactor
  bool workers_exit_ = false;               // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace mnemo
