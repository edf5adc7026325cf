// api/http_front.h: HttpFront, the reactor that reads every HTTP request before cpp-httplib or a handler
// sees it: request line and headers (limit, NULs, bare CR/LF, obsolete folding), Content-Length (digits,
// duplicates, limit), Transfer-Encoding (chunked only, decoded as it arrives: sizes, extensions,
// trailers, limit), Content-Encoding (refused), Expect: 100-continue, keep-alive and pipelining.
//
// The input is what one client sends on one connection. It runs through the front's own code, not a copy
// of it: a socketpair stands in for the accepted TCP connection, the bytes arrive in pieces (OnReadable, as
// the reactor calls it on EPOLLIN), complete requests go through WorkerLoop (cpp-httplib's
// process_request and the handlers below, answering on the socket) and TakeBack (keep-alive, pipelined
// requests), and the client's end of stream closes the connection. api/http_front.cc is compiled into this
// file, unchanged. Serve()'s epoll loop, accept and the
// timeouts are not driven (they need real time and real sockets).
//
// Mode byte: bits 0-2 choose the piece size the bytes arrive in (all at once, 1, 2, 3, 5, 8, 13 or 64
// bytes); bit 3 small limits (a 256-byte head, a 64-byte body) instead of 4 KiB and 2 KiB.
//
// Checked: every handler sees a body within the limit, exactly one Content-Length and no Transfer-Encoding
// or Content-Encoding (the front's promise to cpp-httplib); everything written to the client is HTTP/1.1
// responses; after the client closes, the front holds no connection.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "fuzz/fuzz_util.h"
// The front itself, compiled into this translation unit (and nowhere else in this binary): the
// connection state it keeps per socket, HttpFront::Conn, is defined in the .cc.
#include "api/http_front.cc"

// ---- Access to HttpFront's private members ---------------------------------------------------------
// The harness drives the reactor's private steps itself (fuzz_util.h, MNEMO_FUZZ_ROB).
MNEMO_FUZZ_ROB(ConnsTag, &mnemo::HttpFront::conns_)
MNEMO_FUZZ_ROB(PerIpTag, &mnemo::HttpFront::per_ip_)
MNEMO_FUZZ_ROB(OpenTag, &mnemo::HttpFront::open_)
MNEMO_FUZZ_ROB(BusyTag, &mnemo::HttpFront::busy_)
MNEMO_FUZZ_ROB(EpollTag, &mnemo::HttpFront::epoll_fd_)
MNEMO_FUZZ_ROB(WakeTag, &mnemo::HttpFront::wake_fd_)
MNEMO_FUZZ_ROB(MuTag, &mnemo::HttpFront::mu_)
MNEMO_FUZZ_ROB(WorkTag, &mnemo::HttpFront::work_)
MNEMO_FUZZ_ROB(WorkersExitTag, &mnemo::HttpFront::workers_exit_)
MNEMO_FUZZ_ROB(OnReadableTag, &mnemo::HttpFront::OnReadable)
MNEMO_FUZZ_ROB(TakeBackTag, &mnemo::HttpFront::TakeBack)
MNEMO_FUZZ_ROB(WorkerLoopTag, &mnemo::HttpFront::WorkerLoop)

namespace {

using namespace mnemo_fuzz;  // the tags, Stolen and Field

using ConnMap = std::remove_reference_t<decltype(Field<ConnsTag>(std::declval<mnemo::HttpFront&>()))>;
using Conn = ConnMap::mapped_type::element_type;  // HttpFront::Conn, a private type

// ---- The server behind the front -------------------------------------------------------------------

mnemo::HttpFrontOptions g_options;

void CheckRequest(const httplib::Request& req) {
  if (std::getenv("FUZZ_DEBUG")) {
    std::fprintf(stderr, "handler: %s %s version=[%s] body=%zu CL=%zu [%s]\n", req.method.c_str(), req.path.c_str(),
                 req.version.c_str(), req.body.size(), req.get_header_value_count("Content-Length"),
                 req.get_header_value("Content-Length").c_str());
  }
  FUZZ_CHECK(req.body.size() <= g_options.max_body_bytes);
  FUZZ_CHECK(req.get_header_value_count("Content-Length") == 1);
  // cpp-httplib reads a body only for these methods; for the others the front has read (and the request
  // carries) the body, which cpp-httplib then leaves unread in this request's own buffer.
  const bool reads_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                          req.method == "DELETE" || req.method == "PRI";
  const uint64_t length = std::stoull(req.get_header_value("Content-Length"));
  FUZZ_CHECK(length <= g_options.max_body_bytes);
  FUZZ_CHECK(reads_body ? length == req.body.size() : req.body.empty());
  FUZZ_CHECK(!req.has_header("Transfer-Encoding") && !req.has_header("Content-Encoding"));
}

void Answer(const httplib::Request& req, httplib::Response& res) {
  CheckRequest(req);
  std::string text = req.method + " " + req.path;
  for (const auto& [name, value] : req.params) text += " " + name + "=" + value;
  text += "\n" + req.body;
  if (req.has_header("X-Close")) res.set_header("Connection", "close");
  res.set_content(text, "text/plain");
}

mnemo::HttpFront& Front() {
  static mnemo::HttpFront* front = [] {
    auto* f = new mnemo::HttpFront();
    f->Get(R"(/.*)", Answer);
    f->Post(R"(/.*)", Answer);
    f->Put(R"(/.*)", Answer);
    f->Patch(R"(/.*)", Answer);
    f->Delete(R"(/.*)", Answer);
    f->Options(R"(/.*)", Answer);
    return f;
  }();
  return *front;
}

void Configure(bool small) {
  mnemo::HttpFrontOptions o;
  o.threads = 1;
  o.max_header_bytes = small ? 256 : 4096;
  o.max_body_bytes = small ? 64 : 2048;
  o.write_timeout_s = 1;
  o.max_requests_per_connection = 50;
  FUZZ_CHECK(Front().Configure(o).ok());
  g_options = o;
}

// Reads what the front wrote to the client; it must be HTTP/1.1 responses.
void Drain(int client, std::string* received) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(client, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    received->append(buf, static_cast<size_t>(n));
  }
}

// Runs every complete request through the worker step and hands the connections back, as the reactor does
// after a worker wakes it; pipelined requests dispatch again.
void RunWorkers(mnemo::HttpFront& front, int client, std::string* received) {
  for (int rounds = 0; rounds < 1000; ++rounds) {
    {
      std::lock_guard<std::mutex> lock(Field<MuTag>(front));
      if (Field<WorkTag>(front).empty()) return;
      Field<WorkersExitTag>(front) = true;  // WorkerLoop returns once the queue is empty
    }
    (front.*Stolen(WorkerLoopTag{}))();
    {
      std::lock_guard<std::mutex> lock(Field<MuTag>(front));
      Field<WorkersExitTag>(front) = false;
    }
    uint64_t count;
    while (::read(Field<WakeTag>(front), &count, sizeof(count)) > 0) {
    }
    Drain(client, received);
    (front.*Stolen(TakeBackTag{}))();
  }
  FUZZ_CHECK(false && "a connection kept dispatching");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Configure(false);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  static const size_t kPieces[] = {0, 1, 2, 3, 5, 8, 13, 64};
  const size_t piece = kPieces[mode & 7];
  const bool small = (mode & 8) != 0;
  if ((g_options.max_body_bytes == 64) != small) Configure(small);
  const std::string_view input = mnemo_fuzz::AsText(data + 1, size - 1);

  mnemo::HttpFront& front = Front();
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  const int fd = sv[0], client = sv[1];
  {
    // What Accept() does for a new connection.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    FUZZ_CHECK(::epoll_ctl(Field<EpollTag>(front), EPOLL_CTL_ADD, fd, &ev) == 0);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->ip = "192.0.2.1";
    c->port = 4242;
    c->idle_since = std::chrono::steady_clock::now();
    c->deadline = c->idle_since + std::chrono::seconds(5);
    ++Field<PerIpTag>(front)[c->ip];
    ++Field<OpenTag>(front);
    Field<ConnsTag>(front)[fd] = std::move(c);
  }

  std::string received;
  size_t at = 0;
  while (at < input.size() && Field<ConnsTag>(front).count(fd) != 0) {
    const size_t n = piece == 0 ? input.size() : std::min(piece, input.size() - at);
    // The socket buffer holds far more than a piece; the front reads it all in one recv.
    FUZZ_CHECK(::send(client, input.data() + at, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n));
    at += n;
    (front.*Stolen(OnReadableTag{}))(fd);
    Drain(client, &received);
    RunWorkers(front, client, &received);
  }
  // The client is done sending: the front sees the end of the stream and closes (or already has).
  ::shutdown(client, SHUT_WR);
  for (int i = 0; i < 4 && Field<ConnsTag>(front).count(fd) != 0; ++i) {
    (front.*Stolen(OnReadableTag{}))(fd);
    RunWorkers(front, client, &received);
  }
  Drain(client, &received);
  ::close(client);

  FUZZ_CHECK(Field<ConnsTag>(front).count(fd) == 0);
  FUZZ_CHECK(Field<OpenTag>(front) == 0 && Field<PerIpTag>(front).empty() && Field<BusyTag>(front).empty());
  FUZZ_CHECK(received.empty() || received.compare(0, 9, "HTTP/1.1 ") == 0);
  return 0;
}
