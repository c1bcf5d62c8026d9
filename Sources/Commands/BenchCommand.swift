// `llama-train bench`: full training steps on random tokens, timed, against the machine's own sgemm rate
// measured in the same process. The last line is JSON, for scripts/bench-step.sh.
//
//   llama-train bench --config configs/bench-small.json --threads 1
import Configuration
import Foundation
import Inference
import Kernels
import Model
import Tools
import Training

enum BenchCommand {
    static let spec = CommandSpec(
        name: "bench",
        summary: "time full training steps (forward, backward, clip, AdamW) on random tokens; the last line is JSON",
        flags: [
            Flag(
                "config", .text, "FILE",
                "the run config whose model and micro-batch to time (required without --attention)"),
            Flag(TrainOptions.settings.setting(\.threads)),
            Flag(
                "steps", .int(min: 1, max: 1_000_000), "K", default: "5",
                "timed steps (--attention: repeats, 3 if not given)"),
            Flag("warmup", .int(min: 0, max: 1_000_000), "W", default: "2", "untimed steps first"),
            Flag("quiet", .toggle, "print only the summary"),
            Flag("recompute", .choice(Recompute.allCases.map(\.rawValue)), "", "override the config's train.recompute"),
            Flag(
                "precision", .choice(Precision.allCases.map(\.rawValue)), "", default: "fp32",
                "matmul precision (fp32 here whatever the CPU; bf16 runs oneDNN)"),
            Flag("attention", .toggle, "time attention alone: flash for each --tiles against the materialised kernel"),
            Flag("seq", .int(min: 1, max: 1 << 20), "T", default: "2048", "--attention: tokens"),
            Flag("heads", .int(min: 1, max: 1024), "H", default: "8", "--attention: query heads"),
            Flag(
                "kv-heads", .int(min: 1, max: 1024), "G",
                "--attention: key/value heads (as many as --heads if not given)"),
            Flag("head-dim", .int(min: 1, max: 1024), "D", default: "64", "--attention: head dimension"),
            Flag("tiles", .list, "QxK", default: "32x32 64x64 128x128 64x128 128x64", "--attention: tile sizes to try"),
            Flag(
                "decode", .toggle,
                "time the inference engine on --config's model (random weights): batch-1 decode against the memory "
                    + "bound measured here, larger batches, prefill against the training forward"),
            Flag("batches", .list, "B", default: "1 32", "--decode: batch sizes"),
            Flag("decode-weights", .list, "P", default: "fp32 bf16", "--decode: precisions of the decode weights"),
            Flag("prompt-tokens", .int(min: 1, max: 1 << 20), "T", default: "128", "--decode: prompt length"),
            Flag("new-tokens", .int(min: 1, max: 1 << 20), "N", default: "64", "--decode: tokens decoded per sequence"),
            Flag(
                "cache-length", .int(min: 1, max: 1 << 24), "T",
                "--decode: each slot's cache holds T tokens (default: prompt and new tokens), for the memory check"),
            GenerateCommand.kvCacheFlag,
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        if args.flag("attention") { return try attention(args) }
        if args.flag("decode") { return try decode(args) }
        let path = try args.require("config")
        let threads = Self.threads(args)
        let steps = args.int(declared: "steps")
        let warmup = args.int(declared: "warmup")
        let quiet = args.flag("quiet")
        var config = try RunConfig.load(path: path)
        if let mode = args.string("recompute") { config.train.recompute = Recompute(rawValue: mode)! }
        try config.checkFitsInMemory(file: path)
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let precision = Precision(rawValue: args.string(declared: "precision"))!
        let r = try Benchmark.run(
            config: config, name: name, threads: threads, precision: precision, steps: steps, warmup: warmup,
            log: { if !quiet { print($0) } })
        print("")
        print(
            "bench \(name): \(r.parameters) parameters, \(r.tokensPerStep) tokens/step, \(threads) thread(s), median of \(steps) steps"
        )
        let rows: [(String, String)] = [
            (
                "step (median)",
                String(format: "%.1f ms  [min %.1f, max %.1f]", r.stepMsMedian, r.stepMsMin, r.stepMsMax)
            ),
            ("  forward", String(format: "%.1f ms", r.forwardMsMedian)),
            ("  backward", String(format: "%.1f ms", r.backwardMsMedian)),
            ("  clip + AdamW", String(format: "%.1f ms", r.optimizerMsMedian)),
            ("tokens/s", String(format: "%.0f", r.tokensPerS)),
            ("model GFLOP/s", String(format: "%.1f  (%.1f MFLOP/token)", r.modelGflops, r.flopsPerToken / 1e6)),
            ("sgemm GFLOP/s", String(format: "%.1f  (%@)", r.sgemmGflops, r.sgemmShape)),
            ("MFU vs sgemm", String(format: "%.3f", r.mfuVsSgemm)),
            ("\(r.precision) matmul", String(format: "%.1f GFLOP/s, MFU %.3f", r.matmulGflops, r.mfu)),
            ("peak RSS", String(format: "%.0f MB", r.peakRssMb)),
        ]
        for (k, v) in rows { print("  \(k.padding(toLength: 16, withPad: " ", startingAt: 0)) \(v)") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(r), as: UTF8.self))
    }

    static func attention(_ args: Arguments) throws {
        let (T, H, D) = (args.int(declared: "seq"), args.int(declared: "heads"), args.int(declared: "head-dim"))
        let G = args.int("kv-heads", otherwise: H)
        guard H % G == 0 else { throw args.usage("--heads \(H) must be a multiple of --kv-heads \(G)") }
        let tileNames = args.list("tiles")
        let tiles = try tileNames.map { name -> (Int, Int) in
            let parts = name.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts.allSatisfy({ $0 >= 1 && $0 <= Int(LM_FLASH_MAX_TILE) }) else {
                throw args.usage("--tiles takes QxK with both in 1...\(LM_FLASH_MAX_TILE), got '\(name)'")
            }
            return (parts[0], parts[1])
        }
        lm_set_blas_threads(Int32(Self.threads(args)))
        // Attention alone is timed fewer times than whole steps: --steps' own default is for those.
        let repeats = args.string("steps") == nil ? 3 : args.int(declared: "steps")
        let results = AttentionBenchmark.run(B: 1, T: T, H: H, G: G, D: D, tiles: tiles, repeats: repeats)
        print("attention B 1, T \(T), H \(H), G \(G), D \(D), one thread: forward + backward, median of \(repeats)")
        for r in results {
            print(
                String(
                    format: "  %@ %4d x %-4d  forward %8.1f ms  backward %8.1f ms  %6.1f GFLOP/s (causal half)",
                    r.kernel.padding(toLength: 12, withPad: " ", startingAt: 0), r.queryTile, r.keyTile, r.forwardMs,
                    r.backwardMs, r.gflops))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(results), as: UTF8.self))
    }

    static func decode(_ args: Arguments) throws {
        let path = try args.require("config")
        let config = try RunConfig.load(path: path)
        let batches = try args.list("batches").map { word -> Int in
            guard let b = Int(word), b >= 1, b <= 1 << 16 else {
                throw args.usage("--batches takes sizes from 1 to 65536, got '\(word)'")
            }
            return b
        }
        let repeats = args.string("steps") == nil ? 3 : args.int(declared: "steps")
        let r = try DecodeBenchmark.run(
            config: config.model, threads: Self.threads(args), batches: batches,
            precisions: try args.list("decode-weights").map { word in
                guard let p = DecodePrecision(rawValue: word) else {
                    throw args.usage("--decode-weights takes fp32 and bf16, got '\(word)'")
                }
                return p
            },
            promptTokens: args.int(declared: "prompt-tokens"), newTokens: args.int(declared: "new-tokens"),
            cacheLength: args.int("cache-length"), cache: GenerateCommand.kvCache(args),
            repeats: repeats, log: { print($0) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(r), as: UTF8.self))
    }

    /// --threads, as the training commands declare it (its default included).
    static func threads(_ args: Arguments) -> Int { args.settings(TrainOptions.settings, from: TrainOptions()).threads }
}
