// Drives mnemo's /v1/completions with the official `openai` npm client, unchanged: plain, streamed and
// with logprobs. Usage: node check.mjs BASE_URL API_KEY MODEL   (prints one JSON line, exits 1 on failure)
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0 });

const models = await client.models.list();
assert.equal(models.data[0].id, model);

const params = { model, prompt: 'The cat sees', max_tokens: 10, temperature: 0, logprobs: 2 };
const whole = await client.completions.create(params);
const choice = whole.choices[0];
assert.equal(typeof choice.text, 'string');
assert.ok(['length', 'stop'].includes(choice.finish_reason));
assert.equal(choice.logprobs.tokens.length, choice.logprobs.token_logprobs.length);
assert.equal(choice.logprobs.top_logprobs[0] && Object.keys(choice.logprobs.top_logprobs[0]).length, 2);
assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

const stream = await client.completions.create({ ...params, stream: true });
let streamed = '';
let logprobTokens = 0;
for await (const chunk of stream) {
  streamed += chunk.choices[0].text;
  if (chunk.choices[0].logprobs) logprobTokens += chunk.choices[0].logprobs.tokens.length;
}
assert.equal(streamed, choice.text);
assert.equal(logprobTokens, choice.logprobs.tokens.length);

let notFound = 0;
try {
  await client.completions.create({ ...params, model: 'no-such-model' });
} catch (e) {
  notFound = e.status;
}
assert.equal(notFound, 404);
console.log(JSON.stringify({ ok: true, text: choice.text, streamed_chunks_text: streamed }));
