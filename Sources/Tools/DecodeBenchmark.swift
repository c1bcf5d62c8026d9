// DecodeBenchmark: the inference engine timed against the bound that limits it, measured in the same process.
//
// Batch-1 decoding reads every weight once per token, so its ceiling is the memory bandwidth over the weights'
// bytes: the bandwidth is a streaming read (lm_sum_squares) of a buffer far larger than the caches, taken here,
// beside the decode. Larger batches share those reads and become compute-bound; prefill is compared with the
// training forward at the same length. Random weights: only the shapes matter for time.
import Foundation
import Inference
import Kernels
import Model
import Support

public struct DecodeBenchmarkResult: Codable, Sendable {
    public var parameters: Int
    public var weightBytes: Int
    public var threads: Int
    public var promptTokens: Int
    public var newTokens: Int
    /// A streaming read's rate, bytes/s, and the batch-1 tokens/s it allows.
    public var readBytesPerS: Double
    public var boundTokensPerS: Double
    /// Decode tokens/s (all sequences together) per batch size, the median of the repeats.
    public var decodeTokensPerS: [String: Double]
    public var batchOneOfBound: Double
    public var prefillTokensPerS: Double
    public var trainingForwardTokensPerS: Double
    public var peakRssMb: Double

    enum CodingKeys: String, CodingKey {
        case parameters, weightBytes = "weight_bytes", threads, promptTokens = "prompt_tokens"
        case newTokens = "new_tokens", readBytesPerS = "read_bytes_per_s", boundTokensPerS = "bound_tokens_per_s"
        case decodeTokensPerS = "decode_tokens_per_s", batchOneOfBound = "batch_one_of_bound"
        case prefillTokensPerS = "prefill_tokens_per_s", trainingForwardTokensPerS = "training_forward_tokens_per_s"
        case peakRssMb = "peak_rss_mb"
    }
}

public enum DecodeBenchmark {
    /// Bytes per second of a streaming read of `bytes` (at least 4× the last-level cache of any CPU here).
    public static func readRate(bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        let buffer = FloatBuffer(count: bytes / 4)
        buffer.pointer.update(repeating: 1, count: buffer.count)
        var times: [Double] = []
        var sink = 0.0
        for _ in 0..<repeats {
            let start = monotonicSeconds()
            sink += lm_sum_squares(buffer.pointer, buffer.count)
            times.append(monotonicSeconds() - start)
        }
        precondition(sink > 0)
        return Double(bytes) / times.sorted()[times.count / 2]
    }

    public static func run(
        config: LlamaConfig, threads: Int, batches: [Int], promptTokens: Int, newTokens: Int, repeats: Int,
        log: (String) -> Void
    ) throws -> DecodeBenchmarkResult {
        lm_set_blas_threads(Int32(threads))
        let model = try LlamaModel(config: config, purpose: .inference)
        model.threads = threads
        model.initialize(seed: 1)
        let weightBytes = 4 * model.layout.count
        let read = readRate()
        let bound = read / Double(weightBytes)
        log(
            String(
                format: "streaming read %.1f GB/s over %.2f GB of weights: at most %.1f tokens/s at batch 1",
                read / 1e9,
                Double(weightBytes) / 1e9, bound))
        let V = config.vocabSize
        var rng = SplitMix64(seed: 3)
        let prompt = (0..<promptTokens).map { _ in Int32(1 + rng.next() % UInt64(V - 1)) }
        var decode: [String: Double] = [:]
        var prefillRate = 0.0
        for batch in batches {
            let engine = try InferenceEngine(
                model: model, slots: batch, maxLength: promptTokens + newTokens + 1, threads: threads)
            var rates: [Double] = [], prefills: [Double] = []
            for _ in 0..<repeats {
                for slot in 0..<batch { engine.release(slot: slot) }
                let t0 = monotonicSeconds()
                var next = [Int32](repeating: 0, count: batch)
                for slot in 0..<batch {
                    try engine.prefill(slot: slot, tokens: prompt) { _, logits in
                        next[slot] = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                    }
                }
                let t1 = monotonicSeconds()
                for _ in 0..<newTokens {
                    let logits = try engine.decode(next.enumerated().map { ($0.offset, $0.element) })
                    for b in 0..<batch {
                        var best = 0
                        for i in 1..<V where logits[b * V + i] > logits[b * V + best] { best = i }
                        next[b] = Int32(best)
                    }
                }
                let t2 = monotonicSeconds()
                prefills.append(Double(batch * promptTokens) / (t1 - t0))
                rates.append(Double(batch * newTokens) / (t2 - t1))
            }
            let rate = rates.sorted()[rates.count / 2]
            decode["\(batch)"] = rate
            if batch == batches.first { prefillRate = prefills.sorted()[prefills.count / 2] }
            log(
                String(format: "batch %3d: decode %.1f tokens/s (%.2f of the batch-1 bound)", batch, rate, rate / bound)
            )
        }
        // The training forward (the model's own, logits at every position) at the prompt's length.
        let ignore = [Int32](repeating: LlamaModel.ignoreIndex, count: promptTokens)
        var forwards: [Double] = []
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            _ = try model.forward(tokens: prompt, targets: ignore, batch: 1, seqLen: promptTokens)
            forwards.append(Double(promptTokens) / (monotonicSeconds() - t0))
        }
        let forward = forwards.sorted()[forwards.count / 2]
        log(
            String(
                format: "prefill %.0f tokens/s against the training forward's %.0f (%.2f×), %d tokens", prefillRate,
                forward, prefillRate / forward, promptTokens))
        return DecodeBenchmarkResult(
            parameters: model.layout.count, weightBytes: weightBytes, threads: threads, promptTokens: promptTokens,
            newTokens: newTokens, readBytesPerS: read, boundTokensPerS: bound, decodeTokensPerS: decode,
            batchOneOfBound: (decode["1"] ?? 0) / bound, prefillTokensPerS: prefillRate,
            trainingForwardTokensPerS: forward, peakRssMb: Double(ProcessStats.peakResidentBytes()) / 1_048_576)
    }
}
