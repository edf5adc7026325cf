// The official `openai` npm client (pinned in tests/openai_client/package.json; v4 still runs on Debian 12's
// Node 18) calls the server unchanged: completions with and without streaming, with logprobs, model list,
// and a 404 for another model.
#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "api/server.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using testing::RunCommand;
using testing::ScratchDir;

TEST(ServerOpenAiClientTest, OfficialClientWorksUnchanged) {
  // Set-up: the client library, installed once into the build tree.
  const std::string npm_dir = MNEMO_NPM_DIR;
  std::string out;
  ASSERT_EQ(RunCommand("mkdir -p " + npm_dir + " && cp " MNEMO_SOURCE_DIR "/tests/openai_client/package.json " +
                           npm_dir + "/ && cp " MNEMO_SOURCE_DIR "/tests/openai_client/check.mjs " + npm_dir + "/", &out), 0);
  if (RunCommand("test -f " + npm_dir + "/node_modules/openai/package.json", &out) != 0) {
    ASSERT_EQ(RunCommand("cd " + npm_dir + " && npm install --no-audit --no-fund --loglevel=error 2>&1", &out), 0)
        << "npm install failed (the npm registry must be reachable):\n" << out;
  }
  ScratchDir d;
  ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(d.path(), /*steps=*/5));
  ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " init --state " + d.File("state") + " --model " + d.File("model"), &out), 0)
      << out;
  testing::WriteFileOrDie(d.File("keys"), "read sk-test-read-0123456789\n");
  ServeOptions o;
  o.state = d.File("state");
  o.port = 0;
  o.api_key_file = d.File("keys");
  o.log_requests = false;
  Server server(o);
  int port = 0;
  ASSERT_TRUE(server.Bind(&port).ok());
  Status run;
  std::thread thread([&] { run = server.Run(); });
  for (int i = 0; i < 600 && !server.ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(server.ready());
  const int rc = RunCommand("node " + npm_dir + "/check.mjs http://127.0.0.1:" + std::to_string(port) +
                                " sk-test-read-0123456789 model 2>&1", &out);
  server.Stop();
  thread.join();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"ok\":true"), std::string::npos) << out;
  EXPECT_TRUE(run.ok()) << run.ToString();
}

}  // namespace
}  // namespace mnemo
