// The HTTP layer of mnemo serve before the front (HEAD b4af09e, api/server.cc Bind() and pre-routing):
// cpp-httplib 0.11.4 with the same settings, /health, and /v1/completions parsing its body as JSON.
// Build: g++ -O2 -std=c++17 old_http.cc -o old_http -lcpp-httplib -lpthread
// Run: old_http KEY  (prints "listening on http://127.0.0.1:PORT")
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <csignal>
#include <cstdio>
#include <thread>
#include <unistd.h>

static httplib::Server* g_server;
static int g_pipe[2];
int main(int argc, char** argv) {
  const std::string key = argc > 1 ? argv[1] : "read-key-0123456789";
  httplib::Server http;
  g_server = &http;
  http.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    const std::string length = req.get_header_value("Content-Length");
    const bool has_body = (!length.empty() && length != "0") || req.has_header("Transfer-Encoding");
    if (req.path != "/health" && req.get_header_value("Authorization") != "Bearer " + key) {
      if (has_body) res.set_header("Connection", "close");
      res.status = 401;
      res.set_content("{\"error\":{\"message\":\"missing or invalid API key\",\"type\":\"authentication_error\"}}\n",
                      "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}\n", "application/json");
  });
  http.Post("/v1/completions", [](const httplib::Request& req, httplib::Response& res) {
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    res.status = body.is_discarded() ? 400 : 200;
    res.set_content("{\"body_bytes\":" + std::to_string(req.body.size()) + "}\n", "application/json");
  });
  // As Bind() at HEAD.
  http.set_payload_max_length(1 << 20);
  http.set_keep_alive_max_count(1000);
  http.set_tcp_nodelay(true);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  http.new_task_queue = [] { return new httplib::ThreadPool(16); };
  const int port = http.bind_to_any_port("127.0.0.1");
  std::fprintf(stderr, "listening on http://127.0.0.1:%d\n", port);
  // SIGTERM -> stop() after waiting for in-flight requests (none here), as Server::Stop() at HEAD.
  if (pipe(g_pipe) != 0) return 1;
  std::signal(SIGTERM, [](int) { const char b = 1; if (write(g_pipe[1], &b, 1) < 0) {} });
  std::thread waiter([&] { char b; if (read(g_pipe[0], &b, 1) == 1) http.stop(); });
  http.listen_after_bind();
  waiter.join();
  std::fprintf(stderr, "stopped\n");
  return 0;
}
