// mnemo serve: the HTTP server over a state directory (api/server.h).
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "api/cli.h"
#include "api/common_flags.h"
#include "api/server.h"

namespace mnemo::cli {
namespace {

// glibc gives threads their own malloc arenas (up to 8 per core) and keeps what they free: each audit
// thread's tensors left its arena holding memory the next thread did not reuse, so a server's resident
// memory grew by about 60 to 85 MB per audit (5 small audits: 181 -> 579 MB; with one arena: 179 ->
// 247 MB, and 186 MB after malloc_trim). Two arenas keep request threads from contending on one lock.
// MALLOC_ARENA_MAX in the environment wins.
void LimitMallocArenas() {
#ifdef M_ARENA_MAX
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
}

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signal) {
  const unsigned char byte = static_cast<unsigned char>(signal);
  const int saved = errno;
  if (::write(g_signal_pipe[1], &byte, 1) < 0) {
  }
  errno = saved;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, Command* selected) {
  auto* serve = app.add_subcommand("serve", "Serve the state's model over HTTP (OpenAI-compatible completions, facts, metrics)");
  struct Args {
    ServeOptions options;
    KnnFlags knn;
    DeviceFlag device;
  };
  auto a = std::make_shared<Args>();
  ServeOptions& o = a->options;
  serve->add_option("--state", o.state, "State directory (mnemo init)")->required()->check(CLI::ExistingDirectory);
  serve->add_option("--host", o.host, "Address to listen on (non-loopback needs --api-key-file)")->capture_default_str();
  serve->add_option("--port", o.port, "Port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  serve->add_option("--api-key-file", o.api_key_file, "File of \"<role> <key>\" lines (roles: read, admin)")
      ->check(CLI::ExistingFile);
  serve->add_option("--workers", o.threads, "Model worker threads (the cores are divided among them)")
      ->capture_default_str()->check(CLI::Range(1, 64));
  serve->add_option("--batch-slots", o.batch_slots,
                    "Completions decoded together, joining the running batch at its next step (0: each alone on "
                    "a worker; -1: 16 for models of 10M parameters or more, fewer if --batch-memory-mb is short, else 0)")
      ->capture_default_str()->check(CLI::Range(-1, 256));
  serve->add_option("--batch-prefill-tokens", o.batch_prefill_tokens,
                    "Prompt tokens a batched step runs while other completions decode (more: a newcomer's first "
                    "token sooner; fewer: shorter steps for the others)")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  serve->add_option("--batch-memory-mb", o.batch_memory_mb,
                    "Most memory batched decoding may take: its key/value cache and the packed weights (automatic "
                    "slots shrink to fit; 0: a quarter of this machine's memory)")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  serve->add_option("--queue", o.queue, "Requests that may wait for a worker before 503")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  serve->add_option("--http-threads", o.http_threads,
                    "Threads that run requests and write responses (idle and half-read connections hold none)")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  serve->add_option("--max-body", o.max_body_bytes, "Largest request body in bytes, however it is framed (413)")
      ->capture_default_str()->check(CLI::Range(1024, 1 << 30));
  serve->add_option("--header-timeout", o.header_timeout_s,
                    "Seconds from a request's first byte to the end of its head (408)")
      ->capture_default_str()->check(CLI::Range(0.001, 1e6));
  serve->add_option("--body-timeout", o.body_timeout_s,
                    "Seconds from the end of a request's head to the end of its body (408)")
      ->capture_default_str()->check(CLI::Range(0.001, 1e6));
  serve->add_option("--keep-alive-timeout", o.keep_alive_timeout_s,
                    "Seconds a connection may sit idle before and between requests")
      ->capture_default_str()->check(CLI::Range(0.001, 1e6));
  serve->add_option("--write-timeout", o.write_timeout_s, "Seconds each write of a response may take")
      ->capture_default_str()->check(CLI::Range(0.001, 1e6));
  serve->add_option("--max-connections", o.max_connections,
                    "Open connections in total (past it the longest idle one is closed, else 503)")
      ->capture_default_str()->check(CLI::Range(1, 1000000));
  serve->add_option("--max-connections-per-ip", o.max_connections_per_ip,
                    "Open connections from one client address (503 past it)")
      ->capture_default_str()->check(CLI::Range(1, 1000000));
  serve->add_option("--max-tokens-cap", o.max_tokens_cap, "Largest max_tokens a request may ask for")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  serve->add_option("--max-response-items", o.max_response_items,
                    "Largest n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors) of a "
                    "completion (each about 100 bytes of JSON; 400 past it)")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  serve->add_option("--max-score-tokens", o.max_score_tokens,
                    "Most tokens one /v1/score request may score (400 past it)")
      ->capture_default_str()->check(CLI::Range(2, 1 << 24));
  serve->add_option("--memory-nprobe", o.memory_nprobe, "Memories: IVF lists each query scans (models with a memory index)")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  serve->add_option("--memory-ivf-from", o.memory_ivf_from,
                    "Memories: search by IVF once a memory holds this many tokens (0: never, exact search)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  serve->add_option("--audit-dir", o.audit_dir, "Where audit reports are kept (default: <state>/audits)");
  serve->add_option("--request-timeout", o.request_timeout_s, "Seconds before a request gets 504")
      ->capture_default_str()->check(CLI::Range(0.001, 1e6));
  serve->add_flag("!--no-log", o.log_requests, "Do not log each request to stderr");
  a->knn.RegisterKnobs(serve);
  a->device.Register(serve);
  serve->add_option("--gpu-index", o.gpu_index,
                    "Search the base datastore's index on a copy on this GPU (FAISS GPU builds; facts stay on the CPU)")
      ->check(CLI::NonNegativeNumber);
  serve->callback([a, selected] {
    *selected = [a] {
      a->options.knn = a->knn.options;
      // A device or GPU this build or machine lacks fails here (exit 2), before the port is taken.
      Status checked = a->device.Resolve(&a->options.device);
      if (checked.ok()) checked = CheckGpuIndexFlag(a->options.gpu_index);
      if (!checked.ok()) return Fail(checked);
      // SIGINT/SIGTERM: the handler only writes a byte to a pipe (async-signal-safe); a thread reading the
      // pipe stops the server, since a graceful stop needs more than a signal handler may do. (Blocking the
      // signals instead would not work: OpenBLAS starts its threads before main, with signals unblocked.)
      if (::pipe(g_signal_pipe) != 0) return Fail(Status::IOError("pipe failed"));
      struct sigaction action {};
      action.sa_handler = OnSignal;
      sigemptyset(&action.sa_mask);
      sigaction(SIGINT, &action, nullptr);
      sigaction(SIGTERM, &action, nullptr);
      LimitMallocArenas();
      Server server(a->options);
      int port = 0;
      Status s = server.Bind(&port);
      if (!s.ok()) return Fail(s);
      std::fprintf(stderr, "mnemo serve: listening on http://%s:%d (loading %s)\n", a->options.host.c_str(), port,
                   a->options.state.c_str());
      std::thread waiter([&server] {
        unsigned char received = 0;
        while (::read(g_signal_pipe[0], &received, 1) < 0 && errno == EINTR) {
        }
        if (received == 0) return;  // Run returned on its own
        std::fprintf(stderr, "mnemo serve: %s: finishing in-flight requests and closing the state\n",
                     received == SIGINT ? "SIGINT" : "SIGTERM");
        server.Stop();
      });
      s = server.Run();
      // Run returned (stopped, or loading failed): release the waiter if no signal came.
      const unsigned char none = 0;
      if (::write(g_signal_pipe[1], &none, 1) < 0) std::perror("mnemo serve: write");
      waiter.join();
      if (!s.ok()) return Fail(s);
      std::fprintf(stderr, "mnemo serve: stopped\n");
      return 0;
    };
  });
}

}  // namespace mnemo::cli
