// POST /v1/completions (OpenAI completions API, with streaming) and POST /v1/score.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "api/server_impl.h"
#include "lm/scorer.h"
#include "retriever/completion.h"
#include "retriever/dual_scorer.h"

namespace mnemo {
namespace {

using api::Json;

std::string CompletionId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[40];
  std::snprintf(buf, sizeof(buf), "cmpl-%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Parsed /v1/completions body.
struct CompletionParams {
  CompletionRequest request;
  bool stream = false;
  bool truncate = false;
};

Status ParseCompletion(const Json& body, const Tokenizer& tokenizer, int64_t context, const ServeOptions& options,
                       CompletionParams* out) {
  CompletionRequest& r = out->request;
  if (!body.contains("prompt")) return Status::InvalidArgument("prompt: required");
  const Json& prompt = body["prompt"];
  const Json* one = &prompt;
  if (prompt.is_array() && !prompt.empty() && prompt[0].is_string()) {
    if (prompt.size() != 1) return Status::InvalidArgument("prompt: one prompt per request (got an array of " +
                                                           std::to_string(prompt.size()) + " strings)");
    one = &prompt[0];
  }
  if (one->is_string()) {
    r.prompt = tokenizer.Encode(one->get<std::string>());
  } else if (one->is_array()) {
    for (const Json& t : *one) {
      // Types only here; the vocabulary is CompletionRequest::Validate's to check.
      if (!t.is_number_integer() || (t.is_number_unsigned() && t.get<uint64_t>() > INT32_MAX) ||
          t.get<int64_t>() < INT32_MIN) {
        return Status::InvalidArgument("prompt: token ids must be integers in [0, " +
                                       std::to_string(tokenizer.vocab_size()) + ")");
      }
      r.prompt.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
  } else {
    return Status::InvalidArgument("prompt: must be a string or an array of token ids");
  }
  r.max_tokens = std::min<int64_t>(16, options.max_tokens_cap);  // OpenAI's default, within the cap
  r.max_response_items = options.max_response_items;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "max_tokens", 0, options.max_tokens_cap, &r.max_tokens));
  MNEMO_RETURN_IF_ERROR(api::OptionalNumber(body, "temperature", -HUGE_VAL, HUGE_VAL, &r.sampling.temperature));
  MNEMO_RETURN_IF_ERROR(api::OptionalNumber(body, "top_p", -HUGE_VAL, HUGE_VAL, &r.sampling.top_p));
  // Wide ranges: the request's Validate() owns the limits; these only keep the values in int.
  int64_t n = 1, logprobs = -1, seed = 0;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "n", INT32_MIN, INT32_MAX, &n));
  r.n = static_cast<int>(n);
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "logprobs", 0, CompletionRequest::kMaxLogprobs, &logprobs));
  r.logprobs = static_cast<int>(logprobs);
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "seed", INT64_MIN, INT64_MAX, &seed, &r.has_seed));
  r.seed = static_cast<uint64_t>(seed);
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(body, "echo", &r.echo));
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(body, "stream", &out->stream));
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(body, "truncate_prompt", &out->truncate));
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(body, "ignore_eos", &r.ignore_eos));
  int64_t best_of = r.n;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "best_of", INT32_MIN, INT32_MAX, &best_of));
  if (best_of != r.n) return Status::InvalidArgument("best_of: only best_of = n is supported");
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    double v = 0;
    MNEMO_RETURN_IF_ERROR(api::OptionalNumber(body, penalty, -2, 2, &v));
    if (v != 0) return Status::InvalidArgument(std::string(penalty) + ": not supported (must be 0)");
  }
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() &&
      !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return Status::InvalidArgument("logit_bias: not supported");
  }
  if (body.contains("suffix") && !body["suffix"].is_null()) return Status::InvalidArgument("suffix: not supported");
  if (body.contains("stop") && !body["stop"].is_null()) {
    const Json& stop = body["stop"];
    if (stop.is_string()) {
      r.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& s : stop) {
        if (!s.is_string()) return Status::InvalidArgument("stop: must be a string or an array of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      return Status::InvalidArgument("stop: must be a string or an array of strings");
    }
  }
  MNEMO_RETURN_IF_ERROR(ParseKnn(body, options.knn, &r.knn));
  if (body.contains("return_neighbors") && !body["return_neighbors"].is_null()) {
    const Json& v = body["return_neighbors"];
    if (v.is_boolean()) {
      r.return_neighbors = v.get<bool>() ? 8 : 0;
    } else {
      int64_t k = 0;
      MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "return_neighbors", INT32_MIN, INT32_MAX, &k));
      r.return_neighbors = static_cast<int>(k);
    }
  }
  if (static_cast<int64_t>(r.prompt.size()) > context) {
    if (!out->truncate) {
      return Status::InvalidArgument("prompt: " + std::to_string(r.prompt.size()) + " tokens exceed the context of " +
                                     std::to_string(context) + " (set \"truncate_prompt\": true to keep the last " +
                                     std::to_string(context) + ")");
    }
    r.prompt.erase(r.prompt.begin(), r.prompt.end() - context);
  }
  return r.Validate(tokenizer.vocab_size(), context);
}

Json LogprobsJson(const CompletionChoice& c, const Tokenizer& tokenizer) {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array();
  for (const TokenLogprob& t : c.logprobs) {
    tokens.push_back(tokenizer.TokenBytes(t.token));
    token_logprobs.push_back(t.has_logprob ? Json(t.logprob) : Json(nullptr));
    if (!t.has_logprob) {
      top.push_back(nullptr);
      continue;
    }
    Json alternatives = Json::object();
    for (const auto& [id, lp] : t.top) alternatives[tokenizer.TokenBytes(id)] = lp;
    top.push_back(alternatives);
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", c.text_offset}};
}

// What a caller may learn of each neighbour (docs/ARCHITECTURE.md, "api/", roles). Every neighbour says
// where it comes from ("datastore" or "fact"), its distance and its weight. Its entry and next token go to
// admin keys only, for both sources: a read key that had (entry, token) pairs could spell a base
// document from its consecutive entries (documents are deletable data, like facts), or a fact from (fact
// id, position, token) triples; a fact neighbour's fact id, position and text are admin's too.
Json NeighborsJson(const std::vector<Neighbor>& neighbors, const FactStore& store, bool admin) {
  Json out = Json::array();
  for (const Neighbor& nb : neighbors) {
    if (nb.entry < 0) continue;
    const bool fact = IsFactEntry(nb.entry);
    Json j = Json::object();
    if (admin) {
      j["entry"] = nb.entry;
      j["token"] = nb.token;
    }
    j["source"] = fact ? "fact" : "datastore";
    j["distance"] = nb.distance;
    j["weight"] = nb.weight;
    if (!fact) {
      j["fact_id"] = nullptr;
    } else if (admin) {
      j["fact_id"] = FactIdOfEntry(nb.entry);
      j["position"] = PositionOfEntry(nb.entry);
      FactRecord f;
      if (store.Get(FactIdOfEntry(nb.entry), false, &f).ok()) j["text"] = f.text;
    }
    out.push_back(j);
  }
  return out;
}

// The memory pairs a generated token attended to (return_neighbors with a memory). Admin keys see which
// document and position each came from; read keys only the head and weight (document contents are
// admin's, and positions of a known document would let a read key line up its tokens).
Json MemoryHitsJson(const std::vector<MemoryHit>& hits, bool admin) {
  Json out = Json::array();
  for (const MemoryHit& h : hits) {
    Json j = {{"source", "memory"}, {"head", h.head}, {"weight", h.weight}};
    if (admin) {
      j["document_id"] = h.document;
      j["position"] = h.position;
    }
    out.push_back(j);
  }
  return out;
}

// The field an InvalidArgument message names (the text before its first colon).
std::string ParamOf(const Status& s) { return s.message().substr(0, s.message().find(':')); }

}  // namespace

Status ParseKnn(const Json& body, const KnnOptions& defaults, KnnOptions* knn) {
  *knn = defaults;
  if (!body.contains("knn") || body["knn"].is_null()) return Status::OK();
  const Json& k = body["knn"];
  if (!k.is_object()) return Status::InvalidArgument("knn: must be an object {enabled, k, lambda, temperature}");
  int64_t count = knn->k, nprobe = knn->nprobe;
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(k, "enabled", &knn->enabled));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(k, "k", 1, 4096, &count));
  MNEMO_RETURN_IF_ERROR(api::OptionalNumber(k, "lambda", 0, 1, &knn->lambda));
  MNEMO_RETURN_IF_ERROR(api::OptionalNumber(k, "temperature", 1e-6, 1e9, &knn->temperature));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(k, "nprobe", 1, 65536, &nprobe));
  MNEMO_RETURN_IF_ERROR(api::OptionalBool(k, "recompute", &knn->recompute));
  // RetoMaton pointers: scoring (KnnLm::ScoreTargetsFollowing) and generation (KnnLm::Distributions).
  int64_t pointers = knn->min_pointers;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(k, "pointers", 0, KnnOptions::kMaxK, &pointers));
  knn->k = static_cast<int>(count);
  knn->nprobe = static_cast<int>(nprobe);
  knn->min_pointers = static_cast<int>(pointers);
  return Status::OK();
}

void Server::Impl::HandleCompletions(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body) || !CheckModel(body, res)) return;
  CompletionParams params;
  Status s = ParseCompletion(body, *model->tokenizer, model->config.n_positions, options, &params);
  if (!s.ok()) {
    ApiError e = ErrorFromStatus(s);
    e.param = ParamOf(s);
    return SendError(res, e);
  }
  std::unique_ptr<KvMemory> layer_reader;
  s = ParseLayerMemory(body, *state, &layer_reader, &params.request.layer_memory_topk);
  if (!s.ok()) {
    ApiError e = ErrorFromStatus(s);
    e.param = "memory";
    return SendError(res, e);
  }
  // Shared with a streaming worker, which may outlive this handler.
  std::shared_ptr<KvMemory> layer_memory(std::move(layer_reader));
  params.request.layer_memory = layer_memory.get();
  // Its hits count in the response's size: check the limits again with the memory in place.
  if (layer_memory) s = params.request.Validate(model->config.vocab_size, model->config.n_positions);
  if (!s.ok()) {
    ApiError e = ErrorFromStatus(s);
    e.param = ParamOf(s);
    return SendError(res, e);
  }
  const bool admin = Caller(req) == Role::kAdmin;
  const std::string id = CompletionId();
  const int64_t created = UnixSeconds();

  // Completions join the decoding batch unless they read a layer memory (Complete runs those on a worker).
  const bool batched = batcher != nullptr && !layer_memory;
  auto refuse_full = [&] {
    res.set_header("Retry-After", "1");
    SendError(res, {503, "server is busy: the work queue is full; retry shortly", "overloaded"});
  };

  if (!params.stream) {
    CompletionResult result;
    Status run;
    if (batched) {
      struct Waiter {
        std::mutex mu;
        std::condition_variable finished;
        bool done = false;
        Status status;
        CompletionResult result;
      };
      auto waiter = std::make_shared<Waiter>();
      auto cancel = std::make_shared<std::atomic<bool>>(false);
      const Status queued = batcher->Submit(params.request, nullptr, cancel,
                                            [waiter](const Status& status, CompletionResult r) {
                                              std::lock_guard<std::mutex> lock(waiter->mu);
                                              waiter->status = status;
                                              waiter->result = std::move(r);
                                              waiter->done = true;
                                              waiter->finished.notify_all();
                                            });
      if (queued.IsFailedPrecondition()) return refuse_full();
      if (!queued.ok()) return SendError(res, ErrorFromStatus(queued));
      std::unique_lock<std::mutex> lock(waiter->mu);
      if (!waiter->finished.wait_for(lock, std::chrono::duration<double>(options.request_timeout_s),
                                     [&] { return waiter->done; })) {
        *cancel = true;  // ends it at its next step, or before it starts: Cancelled, answered 504
        waiter->finished.wait(lock, [&] { return waiter->done; });
      }
      run = waiter->status;
      result = std::move(waiter->result);
    } else if (!RunOnWorker(res, [&](const std::atomic<bool>& cancel) {
                 run = Complete(*model, memory.get(), params.request, nullptr, &cancel, &result);
               })) {
      return;
    }
    if (!run.ok()) return SendError(res, ErrorFromStatus(run));
    Json choices = Json::array();
    for (size_t i = 0; i < result.choices.size(); ++i) {
      const CompletionChoice& c = result.choices[i];
      Json j = {{"text", c.text}, {"index", i}, {"logprobs", nullptr}, {"finish_reason", c.finish_reason}};
      if (params.request.logprobs >= 0) j["logprobs"] = LogprobsJson(c, *model->tokenizer);
      if (params.request.return_neighbors > 0) {
        Json per_token = Json::array();
        for (const auto& nbs : c.neighbors) per_token.push_back(NeighborsJson(nbs, *store, admin));
        j["neighbors"] = per_token;
        if (layer_memory) {
          Json hits = Json::array();
          for (const auto& h : c.memory_hits) hits.push_back(MemoryHitsJson(h, admin));
          j["memory_hits"] = hits;
        }
      }
      choices.push_back(j);
    }
    metrics.GetCounter("mnemo_tokens_generated_total", "Tokens generated by completions").Increment(result.completion_tokens);
    Json response = {{"id", id},
                     {"object", "text_completion"},
                     {"created", created},
                     {"model", model_id},
                     {"choices", choices},
                     {"usage", {{"prompt_tokens", result.prompt_tokens},
                                {"completion_tokens", result.completion_tokens},
                                {"total_tokens", result.prompt_tokens + result.completion_tokens}}}};
    // A kNN request's generated positions, and how many searched (pointers and confidence skip some).
    if (result.knn.queries > 0) {
      response["knn"] = {{"queries", result.knn.queries},
                         {"searched", result.knn.searched},
                         {"searched_fraction", result.knn.searched_fraction()}};
    }
    return SendJson(res, response);
  }

  // Streaming: the worker produces server-sent events into a channel; this HTTP thread writes them. A
  // failed write means the client left: the worker sees `cancel` at its next token and stops.
  struct Channel {
    std::mutex mu;
    std::condition_variable ready;
    std::deque<std::string> events;
    bool done = false;
    std::atomic<bool> cancel{false};
  };
  auto channel = std::make_shared<Channel>();
  auto push = [channel](std::string event) {
    {
      std::lock_guard<std::mutex> lock(channel->mu);
      channel->events.push_back(std::move(event));
    }
    channel->ready.notify_one();
  };
  const CompletionRequest request = params.request;
  CompletionEventFn on_event = [this, channel, push, id, created, admin](const CompletionEvent& e) {
    const Tokenizer& tokenizer = *model->tokenizer;
    Json choice = {{"text", e.text}, {"index", e.choice}, {"logprobs", nullptr},
                   {"finish_reason", e.finished ? Json(e.finish_reason) : Json(nullptr)}};
    if (e.logprob != nullptr) {
      CompletionChoice one;
      one.logprobs.push_back(*e.logprob);
      one.text_offset.push_back(0);
      choice["logprobs"] = LogprobsJson(one, tokenizer);
      choice["logprobs"].erase("text_offset");
    }
    if (e.neighbors != nullptr) choice["neighbors"] = Json::array({NeighborsJson(*e.neighbors, *store, admin)});
    if (e.memory_hits != nullptr) choice["memory_hits"] = Json::array({MemoryHitsJson(*e.memory_hits, admin)});
    Json chunk = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model_id},
                  {"choices", Json::array({choice})}};
    push("data: " + api::Dump(chunk) + "\n\n");
    return !channel->cancel.load();  // a client that left set it
  };
  auto finish = [this, channel, push](const Status& run, int64_t completion_tokens) {
    if (!run.ok() && !run.IsCancelled()) {
      const ApiError e = ErrorFromStatus(run);
      push("data: " + api::Dump({{"error", {{"message", e.message}, {"type", e.type}}}}) + "\n\n");
    }
    metrics.GetCounter("mnemo_tokens_generated_total", "Tokens generated by completions").Increment(completion_tokens);
    push("data: [DONE]\n\n");
    std::lock_guard<std::mutex> lock(channel->mu);
    channel->done = true;
    channel->ready.notify_one();
  };
  bool queued = false;
  if (batched) {
    const Status s = batcher->Submit(request, on_event, std::shared_ptr<std::atomic<bool>>(channel, &channel->cancel),
                                     [finish](const Status& run, CompletionResult r) { finish(run, r.completion_tokens); });
    if (!s.ok() && !s.IsFailedPrecondition()) return SendError(res, ErrorFromStatus(s));
    queued = s.ok();
  } else {
    queued = work->TrySubmit([this, channel, on_event, finish, request] {
      CompletionResult result;
      Status run;
      try {
        run = Complete(*model, memory.get(), request, on_event, &channel->cancel, &result);
      } catch (const std::exception& e) {
        run = Status::Internal(e.what());
      }
      finish(run, result.completion_tokens);
    });
  }
  if (!queued) return refuse_full();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [channel](size_t, httplib::DataSink& sink) {
    std::unique_lock<std::mutex> lock(channel->mu);
    // Wake up now and then to notice a client that went away while the model is busy.
    channel->ready.wait_for(lock, std::chrono::milliseconds(200), [&] { return channel->done || !channel->events.empty(); });
    while (!channel->events.empty()) {
      std::string event = std::move(channel->events.front());
      channel->events.pop_front();
      lock.unlock();
      if (!sink.write(event.data(), event.size())) {
        channel->cancel = true;
        return false;
      }
      lock.lock();
    }
    const bool done = channel->done;
    lock.unlock();  // the socket calls below may block; the worker must still be able to push
    if (done) {
      sink.done();
      return true;
    }
    if (sink.is_writable && !sink.is_writable()) {
      channel->cancel = true;
      return false;
    }
    return true;
  },
  [channel](bool) { channel->cancel = true; });  // on completion or disconnect: nothing more to send
}

void Server::Impl::HandleScore(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body)) return;
  if (body.contains("model") && !CheckModel(body, res)) return;
  std::vector<int32_t> ids;
  std::string text;
  bool has_text = false;
  Status s = api::OptionalString(body, "text", &text, &has_text);
  if (s.ok() && has_text) {
    ids = model->tokenizer->Encode(text);
  } else if (s.ok() && body.contains("ids") && !body["ids"].is_array()) {
    s = Status::InvalidArgument("ids: must be an array of token ids");
  } else if (s.ok() && body.contains("ids")) {
    for (const Json& t : body["ids"]) {  // by reference: copying a JSON value recurses
      if (!s.ok()) break;
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= model->config.vocab_size) {
        s = Status::InvalidArgument("ids: every element must be a token id in the vocabulary");
      } else {
        ids.push_back(t.get<int32_t>());
      }
    }
  } else if (s.ok()) {
    s = Status::InvalidArgument("text: required (or ids)");
  }
  const char* field = has_text ? "text" : "ids";
  if (s.ok() && ids.size() < 2) s = Status::InvalidArgument(std::string(field) + ": needs at least 2 tokens to score");
  if (s.ok() && static_cast<int64_t>(ids.size()) > options.max_score_tokens) {
    s = Status::InvalidArgument(std::string(field) + ": " + std::to_string(ids.size()) +
                                " tokens exceed the limit of " + std::to_string(options.max_score_tokens) +
                                " tokens per score request (--max-score-tokens); score the text in parts");
  }
  KnnOptions knn;
  if (s.ok()) s = ParseKnn(body, options.knn, &knn);
  if (s.ok()) s = knn.Validate();
  std::unique_ptr<KvMemory> layer_memory;
  int64_t layer_topk = 0;
  if (s.ok()) s = ParseLayerMemory(body, *state, &layer_memory, &layer_topk);
  if (!s.ok()) {
    ApiError e = ErrorFromStatus(s);
    e.param = ParamOf(s);
    return SendError(res, e);
  }

  // A score longer than the context (more than one window) first takes a slot: at most max(1, workers - 1)
  // run at once, so completions and short scores always find a worker free. The wait counts against the
  // request timeout.
  const auto start = std::chrono::steady_clock::now();
  const bool long_score = static_cast<int64_t>(ids.size()) > model->config.n_positions;
  const int slots = std::max(1, options.threads - 1);
  if (long_score) {
    std::unique_lock<std::mutex> lock(score_mu);
    if (long_scores_running >= slots && long_scores_waiting >= static_cast<int>(options.queue)) {
      lock.unlock();
      res.set_header("Retry-After", "1");
      return SendError(res, {503, "server is busy: too many long scores are waiting; retry shortly", "overloaded"});
    }
    ++long_scores_waiting;
    const bool got = score_freed.wait_for(lock, std::chrono::duration<double>(options.request_timeout_s),
                                          [&] { return long_scores_running < slots; });
    --long_scores_waiting;
    if (!got) {
      lock.unlock();
      return SendError(res, {504, "request timed out after " + std::to_string(options.request_timeout_s) +
                                      " s waiting for a scoring slot (scores longer than the context run on " +
                                      std::to_string(slots) + " worker(s) at once)", "timeout"});
    }
    ++long_scores_running;
  }
  struct SlotRelease {
    Server::Impl* impl;
    bool held;
    ~SlotRelease() {
      if (!held) return;
      {
        std::lock_guard<std::mutex> lock(impl->score_mu);
        --impl->long_scores_running;
      }
      impl->score_freed.notify_one();
    }
  } release{this, long_score};
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  DualScores scores;
  Status run;
  if (!RunOnWorker(res, [&](const std::atomic<bool>& cancel) {
        // The same spans and arithmetic as `mnemo score` (tested), stopped within one batch of windows
        // when the request times out.
        ScoreControls controls;
        controls.layer_memory = layer_memory.get();
        controls.layer_topk = layer_topk;
        controls.cancel = &cancel;
        run = ScoreBoth(*model, knn.enabled ? memory.get() : nullptr, knn, ids, WindowOptions(), &scores, controls);
        if (run.IsCancelled()) run = Status::Cancelled("request timed out: " + run.message());
      }, std::max(0.0, options.request_timeout_s - waited))) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  auto perplexity = [](const std::vector<float>& lp) { return PerplexityReport::FromLogprobs(lp).perplexity(); };
  Json tokens = Json::array();
  for (int32_t id : ids) tokens.push_back(model->tokenizer->TokenBytes(id));
  Json out = {{"object", "score"}, {"model", model_id}, {"ids", ids}, {"tokens", tokens},
              {"logprobs_lm", scores.lm}, {"perplexity_lm", perplexity(scores.lm)}, {"knn", knn.enabled}};
  // With a memory, "lm" is the model reading it (the memorizing layer is part of the LM).
  out["memory"] = layer_memory ? Json(body["memory"]) : Json(nullptr);
  if (knn.enabled) {
    out["logprobs_knn"] = scores.knn;
    out["perplexity_knn"] = perplexity(scores.knn);
    out["searched_fraction"] = scores.stats.searched_fraction();
  }
  out["tokens_scored"] = scores.lm.size();
  metrics.GetHistogram("mnemo_score_seconds", "Model time of /v1/score requests", DefaultLatencyBuckets())
      .Observe(scores.seconds);
  SendJson(res, out);
}

}  // namespace mnemo
