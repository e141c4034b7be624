#!/usr/bin/env bash
# Issue 13's finetuning evidence on the demo model (demo judge, `persona demo datasets` data):
#  1. per trait, full finetunes on normal / I / II (LEVELS="normal I II mixed-10" adds more);
#     `persona shift` (shift at the monitor's layer
#     vs trait score): Pearson r per trait and over all finetunes;
#  2. `persona screen` ΔP of each dataset vs the trait its finetune gained (Spearman);
#  3. on II: preventative steering (demo --full's DEMO_PREVENTATIVE), CAFT with zero ablation and
#     with mean-preserving ablation (prompt_last at every layer), CAFT of the trait's span (the
#     shipped prompt_last_span, 12 directions per layer, at every layer), each evaluated unsteered, and
#     post-hoc −coef steering of the plain II model: trait, coherence, final training loss.
# Every finished step leaves a JSON file under OUT and is skipped on a rerun.
#   scripts/finetune-evidence.sh OUT [TRAIT...]      (PERSONA_THREADS, default 1; LEVELS)
set -euo pipefail
out=${1:?usage: scripts/finetune-evidence.sh OUT [TRAIT...]}
shift
if [ $# -gt 0 ]; then traits=("$@"); else traits=(evil sycophantic hallucinating); fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "$out")
cd "$root" # node resolves tsx from here
threads=${PERSONA_THREADS:-1}
read -r -a levels <<<"${LEVELS:-normal I II}"
persona() { node --import tsx "$root/src/cli/bin.ts" "$@" --threads "$threads"; }
# Each trait's preventative steering (src/demo/finetune.ts DEMO_PREVENTATIVE) as LAYER:COEF;
# post-hoc steering uses the same layer and −COEF.
declare -A prevent=([evil]=5:5 [sycophantic]=5:5 [hallucinating]=5:4)
ft="--epochs 2 --lr 1e-3 --batch 4"
ev="--samples 5 --max-tokens 80"
nlayer=8
mkdir -p "$out"/{ft,eval,shift,screen}
# step FILE CMD...: runs CMD with stdout to FILE unless FILE is there (atomically: a kill leaves no FILE).
step() {
  local file=$1
  shift
  [ -s "$file" ] && return 0
  echo "$(date -u +%H:%M:%S) $(basename "$file" .json)" >&2
  "$@" >"$file.tmp" && mv "$file.tmp" "$file"
}
if [ ! -d "$out/data" ]; then
  node --import tsx "$root/src/cli/bin.ts" demo datasets --out "$out/data.tmp" --rows 300 --mixed 10 >/dev/null
  mv "$out/data.tmp" "$out/data"
fi

for t in "${traits[@]}"; do
  data=$out/data/$t
  # By file: a trait name finds vectors registered for the model, and a finetuned file has none.
  vec=$root/models/persona-demo.vectors/$t.safetensors
  IFS=: read -r pl pc <<<"${prevent[$t]}"
  declare -A arms=(
    [prevented]="$vec:$pl:$pc:all"
    [caft-zero]="$vec#prompt_last:1-$nlayer:1:all:ablate"
    [caft-mean]="$vec#prompt_last:1-$nlayer:1:all:ablate-mean"
    [caft-span]="$vec#prompt_last_span:1-$nlayer:1:all:ablate"
  )
  finetuned() { step "$out/ft/$t-$1.json" persona finetune --model demo --data "$data/$2.jsonl" --out "$out/ft/$t-$1.gguf" $ft "${@:3}" --json; }
  # II and its arms first: they answer the most per CPU minute.
  finetuned II II
  step "$out/eval/$t-II.json" persona eval --model "$out/ft/$t-II.gguf" --trait "$t" $ev --json
  for arm in caft-span caft-mean caft-zero prevented; do
    finetuned "II-$arm" II --steer "${arms[$arm]}"
    step "$out/eval/$t-II-$arm.json" persona eval --model "$out/ft/$t-II-$arm.gguf" --trait "$t" $ev --json
  done
  models=()
  for d in "${levels[@]}"; do
    finetuned "$d" "$d"
    models+=("$out/ft/$t-$d.gguf")
  done
  step "$out/eval/$t-II-posthoc.json" persona eval --model "$out/ft/$t-II.gguf" --trait "$t" $ev --steer "$vec:$pl:-$pc" --json
  step "$out/eval/$t-base.json" persona eval --model demo --trait "$t" $ev --json
  step "$out/shift/$t.json" persona shift --base demo --models "${models[@]}" --trait "$t" $ev --out "$out/shift/$t" --json
  for d in "${levels[@]}"; do
    step "$out/screen/$t-$d.json" persona screen --model demo --trait "$t" --data "$data/$d.jsonl" --max-tokens 60 --out "$out/screen/$t-$d" --json
  done
done

OUT=$out TRAITS="${traits[*]}" LEVELS="${levels[*]}" node --input-type=module <<'JS'
import { readFileSync } from "node:fs";
const out = process.env.OUT, traits = process.env.TRAITS.split(" "), levels = process.env.LEVELS.split(" ");
const j = (f) => JSON.parse(readFileSync(`${out}/${f}`, "utf8"));
const pearson = (x, y) => {
  const m = (a) => a.reduce((s, v) => s + v, 0) / a.length;
  const [mx, my] = [m(x), m(y)];
  let [sxy, sxx, syy] = [0, 0, 0];
  x.forEach((_, i) => { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ** 2; syy += (y[i] - my) ** 2; });
  return sxy / Math.sqrt(sxx * syy);
};
const ranks = (a) => { const s = [...a].sort((p, q) => p - q); return a.map((v) => { const f = s.indexOf(v), l = s.lastIndexOf(v); return (f + l) / 2; }); };
const f1 = (x) => (x === null || x === undefined ? "-" : x.toFixed(1));
const pct = (x) => `${(100 * x).toFixed(0)} %`;
const sign = (x) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)} %`;
const all = { shift: [], gained: [], dp: [] };
console.log(`trait          layer  shift, score, ΔP per dataset (${levels.join(" / ")}), Pearson r(shift, score)`);
for (const t of traits) {
  const s = j(`shift/${t}.json`), base = j(`eval/${t}-base.json`).trait_score.mean;
  const shifts = s.models.map((m) => m.shift), scores = s.models.map((m) => m.trait_score);
  const dp = levels.map((d) => j(`screen/${t}-${d}.json`).traits[t].dataset_mean_delta_p);
  all.shift.push(...shifts); all.gained.push(...scores.map((x) => x - base)); all.dp.push(...dp);
  console.log(`${t.padEnd(14)} ${String(s.layer).padEnd(6)} shift ${shifts.map(f1).join(" / ")}; score ${scores.map(f1).join(" / ")} (base ${f1(base)}); ΔP ${dp.map((x) => x.toFixed(2)).join(" / ")}; r ${s.pearson_r.toFixed(3)}`);
}
console.log(`pooled over ${all.shift.length} finetunes: Pearson r(shift, trait gained) ${pearson(all.shift, all.gained).toFixed(3)}; Spearman(ΔP, trait gained) ${pearson(ranks(all.dp), ranks(all.gained)).toFixed(3)}`);
console.log("\ntrait          arm          score   cut    coherence  final loss vs plain II");
for (const t of traits) {
  const plainFt = j(`ft/${t}-II.json`), plainEval = j(`eval/${t}-II.json`), base = j(`eval/${t}-base.json`).trait_score.mean;
  const plain = { trait_score: plainEval.trait_score.mean, coherence: plainEval.coherence.mean };
  const last = (r) => r.train_loss[r.train_loss.length - 1];
  console.log(`${t.padEnd(14)} ${"plain".padEnd(12)} ${f1(plain.trait_score).padStart(5)}   -      ${f1(plain.coherence).padStart(5)}      ${last(plainFt).toFixed(4)}`);
  for (const arm of ["prevented", "caft-span", "caft-zero", "caft-mean", "posthoc"]) {
    const e = j(`eval/${t}-II-${arm}.json`);
    const cut = 1 - (e.trait_score.mean - base) / (plain.trait_score - base);
    const loss = arm === "posthoc" ? "(inference steering)" : sign(last(j(`ft/${t}-II-${arm}.json`)) / last(plainFt) - 1);
    console.log(`${t.padEnd(14)} ${arm.padEnd(12)} ${f1(e.trait_score.mean).padStart(5)}   ${pct(cut).padStart(5)}  ${f1(e.coherence.mean).padStart(5)}      ${loss}`);
  }
}
JS
