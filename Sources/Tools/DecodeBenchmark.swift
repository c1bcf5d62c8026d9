// DecodeBenchmark: the inference engine timed against the bound that limits it, measured in the same process.
//
// Batch-1 decoding reads every weight once per token, so its ceiling is the memory bandwidth over the weights'
// bytes: the bandwidth is a streaming read (lm_stream_sum) of a buffer far larger than the caches, taken here,
// beside the decode. Larger batches share those reads and become compute-bound; prefill is compared with the
// training forward at the same length. Random weights: only the shapes matter for time.
import Foundation
import Inference
import Kernels
import Model
import Support

public struct DecodeBenchmarkResult: Codable, Sendable {
    public var parameters: Int
    public var threads: Int
    public var promptTokens: Int
    public var newTokens: Int
    /// A streaming read's rate, bytes/s (the median of the reads beside the runs).
    public var readBytesPerS: Double
    /// Per decode precision ("fp32", "bf16"): the bytes of weights a token reads, the batch-1 tokens/s the read
    /// rate allows, decode tokens/s (all sequences together, median of the repeats) per batch size, and batch 1's
    /// fraction of its bound (the median over repeats of its rate against a read taken just before it).
    public var weightBytes: [String: Int]
    public var boundTokensPerS: [String: Double]
    public var decodeTokensPerS: [String: [String: Double]]
    public var batchOneOfBound: [String: Double]
    /// Greedy tokens of bf16 decoding equal to fp32's, batch 1, from the same prompt (the first difference ends
    /// the agreement: after it the contexts differ), and of the new tokens in all.
    public var bf16AgreeingPrefix: Int?
    public var prefillTokensPerS: Double
    public var trainingForwardTokensPerS: Double
    public var peakRssMb: Double
    /// Tokens each slot's cache holds (the sequences' full length), and what `plan` counts for the largest
    /// batch at that length: weights, their decode packing, cache, workspace.
    public var cacheLength: Int
    public var plannedMb: Double
    public var cache: String

    enum CodingKeys: String, CodingKey {
        case parameters, threads, promptTokens = "prompt_tokens", newTokens = "new_tokens"
        case readBytesPerS = "read_bytes_per_s", weightBytes = "weight_bytes", boundTokensPerS = "bound_tokens_per_s"
        case decodeTokensPerS = "decode_tokens_per_s", batchOneOfBound = "batch_one_of_bound"
        case bf16AgreeingPrefix = "bf16_agreeing_prefix"
        case prefillTokensPerS = "prefill_tokens_per_s", trainingForwardTokensPerS = "training_forward_tokens_per_s"
        case peakRssMb = "peak_rss_mb", cacheLength = "cache_length", plannedMb = "planned_mb", cache
    }
}

public enum DecodeBenchmark {
    /// Bytes per second of a streaming read of `bytes` (at least 4× the last-level cache of any CPU here), the
    /// way the decode kernels read weights: one stream, the widest vectors the CPU has.
    public static func readRate(bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        let buffer = FloatBuffer(count: bytes / 4)
        buffer.pointer.update(repeating: 1, count: buffer.count)
        return readRate(buffer, repeats: repeats)
    }

    /// The same over a buffer of ones already touched (so no page is first faulted in while timed).
    static func readRate(_ buffer: FloatBuffer, repeats: Int) -> Double {
        var times: [Double] = []
        var sink: Float = 0
        for _ in 0..<repeats {
            let start = monotonicSeconds()
            sink += lm_stream_sum(buffer.pointer, buffer.count)
            times.append(monotonicSeconds() - start)
        }
        precondition(sink > 0)
        return Double(buffer.byteCount) / times.sorted()[times.count / 2]
    }

    public static func run(
        config: LlamaConfig, threads: Int, batches: [Int], precisions: [DecodePrecision], promptTokens: Int,
        newTokens: Int, cacheLength: Int? = nil, cache: DecodePrecision = .fp32, repeats: Int,
        log: (String) -> Void
    ) throws -> DecodeBenchmarkResult {
        let length = max(cacheLength ?? 0, promptTokens + newTokens + 1)
        lm_set_blas_threads(Int32(threads))
        let model = try LlamaModel(config: config, purpose: .inference)
        model.threads = threads
        model.initialize(seed: 1)
        let V = config.vocabSize
        var rng = SplitMix64(seed: 3)
        let prompt = (0..<promptTokens).map { _ in Int32(1 + rng.next() % UInt64(V - 1)) }
        // The bandwidth here moves with the neighbours of a shared machine, so batch 1 is timed against a read
        // taken just before each of its repeats, and its fraction of the bound is the median of those ratios.
        // (Only where batch 1 is timed: the buffer's GiB would otherwise stand in the peak memory.)
        let readBuffer = FloatBuffer(count: batches.contains(1) ? 1 << 28 : 1 << 20)
        readBuffer.pointer.update(repeating: 1, count: readBuffer.count)
        var reads: [Double] = []
        var weightBytes: [String: Int] = [:], bounds: [String: Double] = [:], ofBound: [String: Double] = [:]
        var decode: [String: [String: Double]] = [:]
        var greedy: [DecodePrecision: [Int32]] = [:]
        var prefillRate = 0.0
        for precision in precisions {
            let read = readRate(readBuffer, repeats: 5)
            reads.append(read)
            // A token reads every packed matrix once (the embedding's one row and the norms are noise).
            let bytes = DecodeWeights.bytes(config, precision: precision), bound = read / Double(bytes)
            log(
                String(
                    format: "%@: streaming read %.1f GB/s over %.2f GB of weights: at most %.1f tokens/s at batch 1",
                    precision.rawValue, read / 1e9, Double(bytes) / 1e9, bound))
            var rates: [String: Double] = [:]
            for batch in batches {
                let engine = try InferenceEngine(
                    model: model, slots: batch, maxLength: length, threads: threads,
                    decodeWeights: precision, cache: cache)
                var times: [Double] = [], prefills: [Double] = [], ratios: [Double] = []
                for repeat_ in 0..<repeats {
                    let readNow = batch == 1 ? readRate(readBuffer, repeats: 3) : 0
                    for slot in 0..<batch { engine.release(slot: slot) }
                    let t0 = monotonicSeconds()
                    var next = [Int32](repeating: 0, count: batch)
                    for slot in 0..<batch {
                        try engine.prefill(slot: slot, tokens: prompt) { _, logits in next[slot] = argmax(logits) }
                    }
                    let t1 = monotonicSeconds()
                    var tokens: [Int32] = []
                    for _ in 0..<newTokens {
                        tokens.append(next[0])
                        let logits = try engine.decode(next.enumerated().map { ($0.offset, $0.element) })
                        for b in 0..<batch {
                            next[b] = argmax(UnsafeBufferPointer(rebasing: logits[(b * V)..<((b + 1) * V)]))
                        }
                    }
                    let t2 = monotonicSeconds()
                    if batch == 1 && repeat_ == 0 { greedy[precision] = tokens }
                    prefills.append(Double(batch * promptTokens) / (t1 - t0))
                    times.append(Double(batch * newTokens) / (t2 - t1))
                    if batch == 1 {
                        reads.append(readNow)
                        ratios.append(times.last! * Double(bytes) / readNow)
                    }
                }
                let rate = times.sorted()[times.count / 2]
                rates["\(batch)"] = rate
                if batch == 1 { ofBound[precision.rawValue] = ratios.sorted()[ratios.count / 2] }
                if batch == batches.first && precision == precisions.first {
                    prefillRate = prefills.sorted()[prefills.count / 2]
                }
                log(
                    String(
                        format: "%@ batch %3d: decode %.1f tokens/s (%.2f of the batch-1 bound)", precision.rawValue,
                        batch, rate, batch == 1 ? ofBound[precision.rawValue]! : rate / bound))
            }
            weightBytes[precision.rawValue] = bytes
            bounds[precision.rawValue] = bound
            decode[precision.rawValue] = rates
        }
        var agreeing: Int?
        if let a = greedy[.fp32], let b = greedy[.bf16] {
            agreeing = zip(a, b).prefix { $0 == $1 }.count
            log("bf16's greedy tokens equal fp32's for the first \(agreeing!) of \(newTokens) (random weights)")
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
            parameters: model.layout.count, threads: threads, promptTokens: promptTokens, newTokens: newTokens,
            readBytesPerS: reads.sorted()[reads.count / 2], weightBytes: weightBytes, boundTokensPerS: bounds,
            decodeTokensPerS: decode, batchOneOfBound: ofBound, bf16AgreeingPrefix: agreeing,
            prefillTokensPerS: prefillRate, trainingForwardTokensPerS: forward,
            peakRssMb: Double(ProcessStats.peakResidentBytes()) / 1_048_576, cacheLength: length,
            plannedMb: Double(
                4 * model.layout.count
                    + InferenceEngine.bytes(
                        config, slots: batches.max() ?? 1, maxLength: length, threads: threads,
                        decodeWeights: precisions.contains(.fp32) ? .fp32 : .bf16, cache: cache)) / 1_048_576,
            cache: cache.rawValue)
    }

    private static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        return Int32(best)
    }
}
