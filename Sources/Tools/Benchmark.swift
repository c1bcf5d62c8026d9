// The single-process step benchmark: full training steps (forward, backward, clip, AdamW) on random tokens,
// timed after warm-up, against the machine's own sgemm rate measured in the same process.
//
// It reports ratios measured side by side, not lone absolute times: mfu_vs_sgemm is the model's achieved
// FLOP rate over OpenBLAS's rate on the step's own largest matmul shape (or a 1024³ square, whichever is
// faster), so a slower machine moves both numbers together.

import Configuration
import Foundation
import Kernels
import Model
import Optim
import Support
import Training

public struct BenchmarkResult: Codable, Sendable {
    public var config: String
    public var precision: String
    public var threads: Int
    public var steps: Int
    public var warmupSteps: Int
    public var parameters: Int
    public var tokensPerStep: Int
    public var stepMsMedian: Double
    public var stepMsMin: Double
    public var stepMsMax: Double
    public var forwardMsMedian: Double
    public var backwardMsMedian: Double
    public var optimizerMsMedian: Double
    public var tokensPerS: Double
    public var flopsPerToken: Double
    public var modelGflops: Double
    public var sgemmGflops: Double
    public var sgemmShape: String
    public var mfuVsSgemm: Double
    /// The rate of the precision in use (sgemm for fp32, oneDNN's bf16 primitive for bf16), same process.
    public var matmulGflops: Double
    public var mfu: Double
    public var peakRssMb: Double
    public var finalLoss: Double

    enum CodingKeys: String, CodingKey {
        case config, precision, threads, steps, warmupSteps = "warmup_steps", parameters, tokensPerStep =
            "tokens_per_step"
        case stepMsMedian = "step_ms_median", stepMsMin = "step_ms_min", stepMsMax = "step_ms_max"
        case forwardMsMedian = "forward_ms_median", backwardMsMedian = "backward_ms_median"
        case optimizerMsMedian = "optimizer_ms_median", tokensPerS = "tokens_per_s", flopsPerToken = "flops_per_token"
        case modelGflops = "model_gflops", sgemmGflops = "sgemm_gflops", sgemmShape = "sgemm_shape"
        case mfuVsSgemm = "mfu_vs_sgemm", matmulGflops = "matmul_gflops", mfu, peakRssMb = "peak_rss_mb", finalLoss =
            "final_loss"
    }
}

public enum Benchmark {
    public static func run(
        config: RunConfig, name: String, threads: Int, precision: Precision = .fp32, steps: Int, warmup: Int,
        log: (String) -> Void = { _ in }
    ) throws -> BenchmarkResult {
        lm_set_blas_threads(Int32(threads))
        lm_set_matmul_threads(Int32(threads))
        let model = try LlamaModel(config: config.model, purpose: .training(config.train.recompute))
        model.threads = threads
        model.precision = precision
        model.initialize(seed: config.train.seed)
        let optimizer = AdamW(layout: model.layout)
        optimizer.threads = threads
        let B = config.train.microBatch, T = config.train.seqLen
        var rng = SplitMix64(seed: config.train.seed &+ 1)
        let vocab = UInt64(config.model.vocabSize)
        // A fixed random batch: next-token targets of a random stream, so the loss is well defined.
        let stream = (0...(B * T)).map { _ in Int32(rng.next() % vocab) }
        let tokens = Array(stream[0..<(B * T)]), targets = Array(stream[1...(B * T)])

        var stepMs: [Double] = [], forwardMs: [Double] = [], backwardMs: [Double] = [], optimizerMs: [Double] = []
        var loss = 0.0
        for step in 0..<(warmup + steps) {
            let t0 = monotonicSeconds()
            model.gradients.zero()
            let result = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
            let t1 = monotonicSeconds()
            try model.backward(lossScale: Float(1.0 / Double(max(result.targetCount, 1))))
            let t2 = monotonicSeconds()
            let norm = GradientClipping.clip(model.gradients, maxNorm: 1.0, threads: threads)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 3e-4)
            let t3 = monotonicSeconds()
            loss = result.meanLoss
            let label = step < warmup ? "warm-up" : "step"
            log(
                String(
                    format: "%@ %d: loss %.4f, grad norm %.3f, %.0f ms", label, step + 1, loss, norm, (t3 - t0) * 1e3))
            if step >= warmup {
                stepMs.append((t3 - t0) * 1e3)
                forwardMs.append((t1 - t0) * 1e3)
                backwardMs.append((t2 - t1) * 1e3)
                optimizerMs.append((t3 - t2) * 1e3)
            }
        }
        let peakRss = ProcessStats.peakResidentBytes()
        let sgemm = try measure(.fp32, config: config)
        let engine = precision == .fp32 ? sgemm : try measure(precision, config: config)
        let median = stepMs.median
        let tokensPerS = Double(B * T) / (median / 1e3)
        let flops = model.flopsPerToken(seqLen: T)
        let gflops = flops * tokensPerS / 1e9
        return BenchmarkResult(
            config: name, precision: precision.rawValue, threads: threads, steps: steps, warmupSteps: warmup,
            parameters: model.layout.count,
            tokensPerStep: B * T, stepMsMedian: median, stepMsMin: stepMs.min() ?? 0, stepMsMax: stepMs.max() ?? 0,
            forwardMsMedian: forwardMs.median, backwardMsMedian: backwardMs.median,
            optimizerMsMedian: optimizerMs.median, tokensPerS: tokensPerS, flopsPerToken: flops, modelGflops: gflops,
            sgemmGflops: sgemm.gflops, sgemmShape: sgemm.shape, mfuVsSgemm: gflops / sgemm.gflops,
            matmulGflops: engine.gflops, mfu: gflops / engine.gflops,
            peakRssMb: Double(peakRss) / 1_048_576, finalLoss: loss)
    }

    /// The matmul rate of `precision` (sgemm or oneDNN bf16), median of several calls after a warm-up, on the
    /// step's largest matmul (B·T × dim by dim × max(vocab, ffn)) and on a 1024³ square; the faster is the bar.
    static func measure(_ precision: Precision, config: RunConfig) throws -> (gflops: Double, shape: String) {
        let n = config.train.microBatch * config.train.seqLen
        let shapes = [
            (n, config.model.dim, max(config.model.vocabSize, config.model.ffnHiddenSize)), (1024, 1024, 1024),
        ]
        var best = (gflops: 0.0, shape: "")
        for (m, k, oc) in shapes {
            let rate = try MatmulRate.rate(precision, m: m, k: k, oc: oc)
            if rate > best.gflops { best = (rate, "\(m)x\(k)x\(oc)") }
        }
        return best
    }
}

public enum ProcessStats {
    /// The process's peak resident set (VmHWM), in bytes; 0 where /proc is unavailable.
    public static func peakResidentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            // "VmHWM:\t  1234 kB", or with no space after the tab once the number fills its column.
            let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}
