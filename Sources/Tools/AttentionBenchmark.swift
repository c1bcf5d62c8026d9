// The attention benchmark: flash attention's forward and backward at one shape, for each candidate tile size,
// against the materialised kernel (the naive twin) in the same process. It is how LlamaModel.attentionTiles
// was chosen ("measured, not guessed"), and what the closing notes quote for attention's share of a step.
import Foundation
import Kernels
import Model
import Support
import Training

public struct AttentionTiming: Codable, Sendable {
    public var kernel: String
    public var queryTile: Int
    public var keyTile: Int
    public var forwardMs: Double
    public var backwardMs: Double
    public var gflops: Double

    enum CodingKeys: String, CodingKey {
        case kernel, queryTile = "query_tile", keyTile = "key_tile", forwardMs = "forward_ms", backwardMs =
            "backward_ms", gflops
    }
}

public enum AttentionBenchmark {
    /// Medians of `repeats` runs at (B, T, H, G, D); the naive kernel is skipped when its T×T buffers would
    /// exceed `naiveLimitBytes`. GFLOP/s counts the causal half (what flash does) for every kernel alike.
    public static func run(
        B: Int, T: Int, H: Int, G: Int, D: Int, tiles: [(Int, Int)], repeats: Int,
        naiveLimitBytes: Int = 2 << 30
    ) -> [AttentionTiming] {
        var rng = SplitMix64(seed: 5)
        func random(_ n: Int) -> FloatBuffer {
            let b = FloatBuffer(count: n)
            for i in 0..<n { b[i] = Float(rng.nextUnit() - 0.5) }
            return b
        }
        let q = random(B * T * H * D), k = random(B * T * G * D), v = random(B * T * G * D),
            dout = random(B * T * H * D)
        let out = FloatBuffer(count: q.count), lse = FloatBuffer(count: B * H * T)
        let dq = FloatBuffer(count: q.count), dk = FloatBuffer(count: k.count), dv = FloatBuffer(count: v.count)
        let (b32, t32, h32, g32, d32) = (Int32(B), Int32(T), Int32(H), Int32(G), Int32(D))
        // Causal half: QKᵀ and PV forward (2 products), five in backward (S again, dV, dP, dQ, dK).
        let product = 2.0 * Double(B * H) * Double(T) * Double(T + 1) / 2 * Double(D)
        func time(_ body: () -> Void) -> Double {
            var samples: [Double] = []
            for _ in 0..<(repeats + 1) {
                let start = monotonicSeconds()
                body()
                samples.append(monotonicSeconds() - start)
            }
            return Array(samples.dropFirst()).median * 1e3
        }
        var results: [AttentionTiming] = []
        for (bq, bk) in tiles {
            let units = lm_flash_attention_forward_units(b32, t32, h32, Int32(bq))
            let forward = time {
                lm_flash_attention_forward(
                    out.pointer, lse.pointer, q.pointer, k.pointer, v.pointer, b32, t32, h32, g32, d32,
                    Int32(bq), Int32(bk), 0, units)
            }
            let backward = time {
                lm_flash_attention_backward(
                    dq.pointer, dk.pointer, dv.pointer, dout.pointer, out.pointer, lse.pointer, q.pointer,
                    k.pointer, v.pointer, b32, t32, h32, g32, d32, Int32(bq), Int32(bk), 0,
                    lm_flash_attention_backward_units(b32, g32))
            }
            results.append(
                AttentionTiming(
                    kernel: "flash", queryTile: bq, keyTile: bk, forwardMs: forward, backwardMs: backward,
                    gflops: 7 * product / ((forward + backward) * 1e-3) / 1e9))
        }
        if B * H * T * T * 4 <= naiveLimitBytes {
            let att = FloatBuffer(count: B * H * T * T), scratch = FloatBuffer(count: T * T)
            let forward = time {
                lm_attention_naive_forward(
                    out.pointer, att.pointer, q.pointer, k.pointer, v.pointer, b32, t32, h32, g32, d32)
            }
            let backward = time {
                lm_attention_naive_backward(
                    dq.pointer, dk.pointer, dv.pointer, scratch.pointer, dout.pointer, att.pointer, q.pointer,
                    k.pointer, v.pointer, b32, t32, h32, g32, d32)
            }
            results.append(
                AttentionTiming(
                    kernel: "materialised", queryTile: T, keyTile: T, forwardMs: forward, backwardMs: backward,
                    gflops: 7 * product / ((forward + backward) * 1e-3) / 1e9))
        }
        return results
    }
}
