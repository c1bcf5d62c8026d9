// `llama-train bench`: full training steps on random tokens, timed, against the machine's own sgemm rate
// measured in the same process. The last line is JSON, for scripts/bench-step.sh.
//
//   llama-train bench --config configs/bench-small.json --threads 1
import Configuration
import Foundation
import Kernels
import Tools

enum BenchCommand {
    static let spec = CommandSpec(
        name: "bench",
        summary: "time full training steps (forward, backward, clip, AdamW) on random tokens; the last line is JSON",
        flags: [
            Flag("config", .text, "FILE", required: true, "the run config whose model and micro-batch to time"),
            Flag("threads", .int(min: 1, max: 4096), "N", "BLAS threads (default 1)"),
            Flag("steps", .int(min: 1, max: 1_000_000), "K", "timed steps (default 5)"),
            Flag("warmup", .int(min: 0, max: 1_000_000), "W", "untimed steps first (default 2)"),
            Flag("quiet", .toggle, "print only the summary"),
        ],
        run: run)

    static func run(_ args: inout Arguments) throws {
        let path = try args.require("config")
        let threads = args.int("threads", default: 1)
        let steps = args.int("steps", default: 5)
        let warmup = args.int("warmup", default: 2)
        let quiet = args.flag("quiet")
        let config = try RunConfig.load(path: path)
        try config.checkFitsInMemory(file: path)
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
}
