/**
 * Chat templates (tokenizer.chat_template), as `persona generate` renders them: real template
 * shapes (ChatML, Llama 3, Gemma, Mistral) cut, spliced and salted with jinja syntax, then
 * rendered with jinja and, when jinja fails, by llama.cpp's built-in template engine.
 */
import type { Rng } from "../../../src/demo/corpus/rng.js";
import { CHATML_TEMPLATE } from "../../../src/engine/gguf/tokenizer-meta.js";
import { GgufValueType } from "../../../src/engine/gguf/types.js";
import { nastyString } from "../mutate.js";
import type { ChatMessage } from "../../../src/engine/types.js";
import type { FuzzCase, RunEnv, Target } from "../target.js";
import { type GgufSpec, cloneSpec, modelCommands, tinyModelSpec, writeSpec } from "./gguf.js";

const SEEDS = [
  CHATML_TEMPLATE,
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
  "{%- for message in messages %}{%- if message.role == 'user' %}{{ '[INST] ' + message.content + ' [/INST]' }}{%- elif message.role == 'assistant' %}{{ message.content + eos_token }}{%- endif %}{%- endfor %}",
];

const SALT = [
  "{{", "}}", "{%", "%}", "{#", "#}", "{% endfor %}", "{% endif %}", "{% for x in y %}", "{{ x.y.z }}", "{{ messages[-1] }}", "{{ 1/0 }}", "{{ 'a' * 3 }}",
  "{{ messages|length }}", "{{ foo() }}", "{% set ns = namespace(x=0) %}", "{{ ns.x }}", "{{ message['content'][::-1] }}", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
  "{{ raise_exception('x') }}", "{% if %}", "{{ none }}", "{{ undefined_var.attr }}", "{{ messages | tojson(indent=2) }}", "{{ 'x' | bogus_filter }}",
  "{% for i in range(3) %}{{ i }}{% endfor %}", "{{ (1,2)[5] }}", "{{ {'a':1}['b'] }}", "{{ '%d' % 'x' }}", "\\", "'", '"', "\u0000", "<|im_start|>",
];

function template(rng: Rng): { text: string; what: string } {
  let t = rng.pick(SEEDS);
  const what: string[] = [];
  for (let i = 0, n = 1 + rng.int(3); i < n; i++) {
    const at = rng.int(t.length + 1);
    switch (rng.int(4)) {
      case 0: {
        const len = 1 + rng.int(20);
        t = t.slice(0, at) + t.slice(at + len);
        what.push(`cut ${len} at ${at}`);
        break;
      }
      case 1: {
        const s = rng.pick(SALT);
        t = t.slice(0, at) + s + t.slice(at);
        what.push(`insert ${JSON.stringify(s)} at ${at}`);
        break;
      }
      case 2: {
        const other = rng.pick(SEEDS);
        const from = rng.int(other.length);
        t = t.slice(0, at) + other.slice(from, from + 1 + rng.int(60));
        what.push(`splice at ${at}`);
        break;
      }
      default:
        t = rng.chance(0.5) ? t.slice(0, at) : rng.pick(["chatml", "llama3", "gemma", "mistral-v7", "zephyr", "phi3", "deepseek3", "", nastyString(rng)]);
        what.push(rng.chance(0.5) ? `truncate at ${at}` : "builtin template name or junk");
    }
  }
  return { text: t, what: what.join("; ") };
}

const MESSAGES = [
  [{ role: "user", content: "Hi" }],
  [{ role: "system", content: "Be kind." }, { role: "user", content: "Hi" }],
  [{ role: "user", content: "a" }, { role: "assistant", content: "b" }, { role: "user", content: "c" }],
  [{ role: "tool", content: "{}" }],
  [{ role: "", content: "" }],
];

export const templateTarget: Target<GgufSpec> = {
  name: "template",
  description: "chat templates: real template shapes cut, spliced and salted with broken jinja (jinja render, built-in fallback)",
  setup: tinyModelSpec,
  async make(rng, base): Promise<FuzzCase> {
    const s = cloneSpec(base);
    const t = template(rng);
    const e = s.kv.find((x) => x.key === "tokenizer.chat_template")!;
    Object.assign(e, { type: GgufValueType.STRING, value: t.text });
    const m = rng.int(MESSAGES.length);
    const messages = MESSAGES[m]!;
    const last = messages[messages.length - 1]!.content;
    return { files: { "model.gguf": await writeSpec(s) }, commands: modelCommands(last).slice(1), note: `messages ${m}; ${t.what}`, input: messages };
  },
  async run(c, env: RunEnv) {
    const messages = c.input as ChatMessage[];
    const engine = await env.engine();
    const model = await engine.loadModel("model.gguf", { vocabOnly: true });
    try {
      await model.encodeChat(messages, { addGenerationPrompt: true });
      await model.renderChat(messages, { addGenerationPrompt: false });
    } finally {
      await model.dispose();
    }
  },
};
