// llama-train: the command-line entry point. It parses, dispatches and decides exit codes; the work lives
// in the Training, Model and Distributed modules.
//
//   llama-train bench --config configs/bench-small.json --threads 1
import Checkpoint
import Configuration
import Distributed
import FineTune
import Foundation
import Kernels
import Model
import Support
import Tools
import Training

let usage = """
usage: llama-train <command> [flags]

commands:
  bench   --config FILE [--threads N] [--steps K] [--warmup W] [--quiet]
          time full training steps (forward, backward, clip, AdamW) on random tokens; the last line is JSON
  tokenizer train --input FILE... --out FILE [--vocab-size N] [--character-coverage C]
                  [--user-defined-symbols A,B] [--max-piece-length L]
          learn a SentencePiece BPE model with Llama 2's options (split digits, byte fallback, identity)
  tokenizer bench --tokenizer FILE --input FILE... [--repeat N]
          single-thread encoding speed on the lines of the inputs
  tokenize --tokenizer FILE [--bos] [--eos]
          JSON Lines {"text": ...} on stdin to {"ids": [...], "pieces": [...]} on stdout
  detokenize --tokenizer FILE
          JSON Lines {"ids": [...]} on stdin to {"text": ...} on stdout
  prepare --tokenizer FILE --input [NAME=]PATH... --out DIR [--delimiter LINE] [--shard-tokens N]
          documents (plain text, or .jsonl with "text") to token shards with BOS/EOS; parallel under mpirun
  pretrain --config FILE [--threads N] [--out DIR] [--metrics FILE.jsonl] [--log-every N] [--steps N]
          [--micro-batch N] [--global-batch-tokens N] [--lr X] [--warmup-steps N] [--bucket-mb X]
          [--data DIR --tokenizer FILE] [--seed N] [--on-nonfinite stop|skip]
          [--checkpoint-dir DIR] [--checkpoint-every N] [--keep K] [--background-save] [--resume auto|none|PATH]
          [--stop-after N] [--collective-timeout SECONDS]
          data-parallel pretraining; run under mpirun for several ranks
  sft     --config FILE [pretrain's flags]
          supervised fine-tuning: packed prompt <sep> response, loss on answer tokens only (finetune block)
  reward  --config FILE [pretrain's flags]
          a reward model: scalar head, ranking loss with a rating margin, held-out accuracy per rating
  reward score --checkpoint DIR [--separator S]
          JSON Lines {"prompt", "response"} on stdin, each back with its "reward"
  export  --checkpoint DIR --out HF_DIR
          a sharded checkpoint to config.json + model.safetensors (Hugging Face LlamaForCausalLM)
  plan    --config FILE --ranks N [--json]
          parameters, batch arithmetic, memory per rank and allreduce bytes, without training
  plan    --simulate [--calibration runs/scaling/scaling.json] [--node-tflops X --link-gbps Y --latency-us Z]
          [--configs FILE...] [--max-ranks N] [--json]
          predicted step time, exposed communication and efficiency from 1 to thousands of nodes
  plot    --metrics FILE.jsonl --out FILE.svg [--title TEXT]
          the loss and learning-rate curves of a run as SVG
  generate --checkpoint DIR [--prompt TEXT...] [--max-tokens N] [--temperature T] [--top-p P] [--seed N]
          sample text from a saved model (greedy when the temperature is 0)
  allreduce-bench [--floats N] [--iters K] [--bucket-mb X | --chunk-mb X]
          raw MPI_Allreduce time and bus bandwidth at one message size (run under mpirun)
  mpi-selftest
          check every collective on known values: mpirun -np 3 llama-train mpi-selftest
  help    this text
"""

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("llama-train: error: \(message)\n".utf8))
    exit(code)
}

func runBench(_ args: inout Arguments) throws {
    let path = try args.require("config")
    let threads = try args.int("threads", default: 1)
    let steps = try args.int("steps", default: 5)
    let warmup = try args.int("warmup", default: 2)
    let quiet = args.flag("quiet")
    try args.checkAllUsed()
    guard threads >= 1, steps >= 1, warmup >= 0 else {
        throw UsageError(description: "--threads and --steps must be at least 1, --warmup at least 0")
    }
    let config = try RunConfig.load(path: path)
    let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    let r = try Benchmark.run(config: config, name: name, threads: threads, steps: steps, warmup: warmup,
                              log: { if !quiet { print($0) } })
    print("")
    print("bench \(name): \(r.parameters) parameters, \(r.tokensPerStep) tokens/step, \(threads) thread(s), median of \(steps) steps")
    let rows: [(String, String)] = [
        ("step (median)", String(format: "%.1f ms  [min %.1f, max %.1f]", r.stepMsMedian, r.stepMsMin, r.stepMsMax)),
        ("  forward", String(format: "%.1f ms", r.forwardMsMedian)),
        ("  backward", String(format: "%.1f ms", r.backwardMsMedian)),
        ("  clip + AdamW", String(format: "%.1f ms", r.optimizerMsMedian)),
        ("tokens/s", String(format: "%.0f", r.tokensPerS)),
        ("model GFLOP/s", String(format: "%.1f  (%.1f MFLOP/token)", r.modelGflops, r.flopsPerToken / 1e6)),
        ("sgemm GFLOP/s", String(format: "%.1f  (%@)", r.sgemmGflops, r.sgemmShape)),
        ("MFU vs sgemm", String(format: "%.3f", r.mfuVsSgemm)),
        ("peak RSS", String(format: "%.0f MB", r.peakRssMb)),
    ]
    for (k, v) in rows { print("  \(k.padding(toLength: 16, withPad: " ", startingAt: 0)) \(v)") }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(r), as: UTF8.self))
}

var arguments = CommandLine.arguments.dropFirst()
let command = arguments.popFirst() ?? "help"
do {
    switch command {
    case "bench":
        var args = try Arguments(arguments, switches: ["quiet"])
        try runBench(&args)
    case "tokenizer":
        let sub = arguments.popFirst()
        var args = try Arguments(arguments, lists: ["input", "user-defined-symbols"])
        switch sub {
        case "train": try TokenizerCommands.train(&args)
        case "bench": try TokenizerCommands.bench(&args)
        default: throw UsageError(description: "the tokenizer commands are 'tokenizer train' and 'tokenizer bench'")
        }
    case "tokenize":
        var args = try Arguments(arguments, switches: ["bos", "eos"])
        try TokenizerCommands.tokenize(&args)
    case "detokenize":
        var args = try Arguments(arguments)
        try TokenizerCommands.detokenize(&args)
    case "pretrain":
        var args = try Arguments(arguments, switches: ["background-save"])
        try PretrainCommand.run(&args)
        Communicator.finalize()
    case "sft":
        var args = try Arguments(arguments, switches: ["background-save"])
        try FineTuneCommands.sft(&args)
        Communicator.finalize()
    case "reward":
        if arguments.first == "score" {
            arguments.removeFirst()
            var args = try Arguments(arguments)
            try FineTuneCommands.score(&args)
        } else {
            var args = try Arguments(arguments, switches: ["background-save"])
            try FineTuneCommands.reward(&args)
            Communicator.finalize()
        }
    case "export":
        var args = try Arguments(arguments)
        try PretrainCommand.export(&args)
    case "plan":
        var args = try Arguments(arguments, switches: ["json", "simulate"], lists: ["configs"])
        try ToolCommands.plan(&args)
    case "plot":
        var args = try Arguments(arguments)
        try ToolCommands.plot(&args)
    case "generate":
        var args = try Arguments(arguments, lists: ["prompt"])
        try ToolCommands.generate(&args)
    case "allreduce-bench":
        var args = try Arguments(arguments)
        try AllreduceBench.run(&args)
    case "mpi-selftest":
        try MPISelfTest.run()
    case "prepare":
        var args = try Arguments(arguments, lists: ["input"])
        try PrepareCommand.run(&args)
        Communicator.finalize()
    case "help", "--help", "-h":
        print(usage)
    default:
        fail("unknown command '\(command)'\n\(usage)", code: 2)
    }
} catch let error as UsageError {
    abortJobIfParallel("\(error)")
    fail("\(error)\n\(usage)", code: 2)
} catch {
    abortJobIfParallel("\(error)")
    fail("\(error)", code: 1)
}

/// Under mpirun an error on one rank must end the whole job, never leave the others waiting in a collective.
func abortJobIfParallel(_ message: String) {
    if Communicator.isInitialized, let world = try? Communicator.world(), world.size > 1 {
        world.abort("llama-train: error: \(message)")
    }
}
