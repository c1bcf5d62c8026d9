// The plan's parameter counts for the paper's models, and the loss chart.
import Configuration
import Foundation
import Model
import Optim
import Support
import Testing

@testable import Tools

@Suite struct PlanTests {
    @Test func planCountsThePapersModels() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        func plan(_ name: String, ranks: Int) throws -> TrainingPlan {
            try TrainingPlan(config: RunConfig.load(path: "\(root)/configs/\(name).json"), ranks: ranks)
        }
        #expect(try plan("llama2-7b", ranks: 64).parameters == 6_738_415_616)  // Hugging Face's count for Llama-2-7b
        #expect(try plan("llama2-13b", ranks: 64).parameters == 13_015_864_320)
        #expect(try plan("llama2-70b", ranks: 64).parameters == 68_976_648_192)
        #expect(abs(Double(try plan("llama2-34b", ranks: 64).parameters) / 1e9 - 33.7) < 0.1)
        let p = try plan("llama2-7b", ranks: 64)
        #expect(
            p.accumulationSteps == 16 && p.tokensPerStep == 4_194_304 && p.allreduceBytesPerStep == 4 * p.parameters)
        #expect(
            p.communicationBytesPerRankPerStep == 2 * 63 * p.allreduceBytesPerStep / 64, "a ring allreduce's 2(N−1)/N")
        // bf16 (the default where the CPU has it) rounds a matmul's two inputs; at 7B the largest are the
        // logits' gradient (N × 32000) and the head (32000 × 4096), 2 bytes a value: over 0.25 GiB per rank.
        #expect(p.precisionWorkBytes > 2 * 32000 * 4096 && p.precisionWorkBytes < 1 << 31, "\(p.precisionWorkBytes)")
        var fp32 = try RunConfig.load(path: "\(root)/configs/llama2-7b.json")
        fp32.train.precision = .fp32
        #expect(try TrainingPlan(config: fp32, ranks: 64).precisionWorkBytes == 0)
        // Flash attention and recomputation: 7B's activations at 4096 tokens fit in 8 GiB (98 GiB before).
        var recomputing = try RunConfig.load(path: "\(root)/configs/llama2-7b.json")
        recomputing.train.recompute = .layer
        let lean = try TrainingPlan(config: recomputing, ranks: 64)
        #expect(
            lean.activationBytes <= 8 << 30 && lean.activationBytes * 4 < p.activationBytes, "\(lean.activationBytes)")
        // Fully sharded with recomputation on 64 ranks, the paper's models fit nodes: 7B ≤ 16 GiB, 70B ≤ 64 GiB.
        for (name, limit) in [("llama2-7b", 16), ("llama2-70b", 64)] {
            var sharded = try RunConfig.load(path: "\(root)/configs/\(name).json")
            (sharded.train.recompute, sharded.train.sharding) = (.layer, .full)
            let s = try TrainingPlan(config: sharded, ranks: 64)
            #expect(s.memoryPerRankBytes <= limit << 30, "\(name): \(s.memoryPerRankBytes >> 30) GiB")
            #expect(s.communicationBytesPerRankPerStep > s.allreduceBytesPerStep, "ZeRO-3 moves more than an allreduce")
        }
        #expect(throws: ConfigError.self) { try plan("llama2-7b", ranks: 3) }
        #expect(throws: ConfigError.self) { try plan("llama2-7b", ranks: 2048) }
    }
}

@Suite struct MemoryPlanTests {
    /// The plan's bytes per rank against what a model and its optimizer really allocate (fp32, one rank):
    /// parameters, gradients, AdamW's two moments and the activation arena, buffer by buffer.
    @Test(arguments: [Recompute.none, .layer])
    func planEqualsWhatIsAllocated(recompute: Recompute) throws {
        var t = TrainSettings()
        (t.seqLen, t.microBatch, t.globalBatchTokens, t.precision, t.recompute) = (32, 2, 128, .fp32, recompute)
        var c = LlamaConfig(
            dim: 48, nLayers: 3, nHeads: 6, nKVHeads: 2, vocabSize: 300, ffnHiddenSize: 96, maxSeqLen: 32)
        c.heads = [.lm, .value]
        let config = RunConfig(model: c, train: t)
        let planned = try #require(config.rankMemory(ranks: 1))
        let model = try LlamaModel(config: c, purpose: .training(recompute))
        let optimizer = AdamW(layout: model.layout, settings: t.adamw)
        try model.prepare(batch: t.microBatch, seqLen: t.seqLen)
        #expect(planned.parameters == model.parameters.byteCount && planned.gradients == model.gradients.byteCount)
        #expect(planned.moments == optimizer.m.byteCount + optimizer.v.byteCount)
        #expect(
            planned.activations == model.activations?.byteCount,
            "arena \(model.activations?.byteCount ?? 0), planned \(planned.activations)")
        #expect(planned.precisionWork == 0 && planned.shardingWork == 0)
    }
}

@Suite struct ChartTests {
    @Test func svgHasBothCurves() throws {
        let path = NSTemporaryDirectory() + "metrics-\(UUID().uuidString).jsonl"
        let lines = (1...20).map {
            "{\"step\": \($0), \"loss\": \(8.0 - Double($0) * 0.2), \"lr\": \(Double($0) * 1e-4)}"
        }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let svg = try LossChart.svg(metricsPath: path, title: "t")
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<path").count == 3)
        #expect(!svg.contains("validation"))
        // Validation losses at steps 10 and 20 (the second below every training loss): a third curve through two
        // points, inside the loss axis.
        let validated = lines.enumerated().map { i, line in
            i % 10 == 9 ? line.dropLast() + ", \"val_loss\": \(i == 19 ? 3.0 : 7.0)}" : Substring(line)
        }
        try validated.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let both = try LossChart.svg(metricsPath: path, title: "t")
        #expect(both.components(separatedBy: "<path").count == 4 && both.components(separatedBy: "<circle").count == 3)
        #expect(both.contains("validation loss") && both.contains(">3<"), "the loss axis reaches the validation loss")
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try LossChart.svg(metricsPath: path, title: "t") } throws: { "\($0)".contains(":1") }
    }
}

@Suite struct TickTests {
    /// Axis ticks are round numbers that cover the data, never 8.357 or 7.352.
    @Test func ticksAreRoundAndCoverTheRange() {
        for (low, high) in [(4.49, 8.357), (0.0, 3e-4), (1.0, 300.0), (2.0031, 2.0047)] {
            let ticks = niceTicks(low, high)
            #expect(
                ticks.first! <= low && ticks.last! >= high && ticks.count >= 3 && ticks.count <= 12,
                "\(low)…\(high): \(ticks)")
            let step = ticks[1] - ticks[0]
            let mantissa = step / pow(10, floor(log10(step)))
            #expect([1, 2, 5, 10].contains { abs(mantissa - $0) < 1e-6 }, "step \(step)")
            #expect(ticks.allSatisfy { tickLabel($0).count <= 8 }, "\(ticks.map(tickLabel))")
        }
        #expect(
            tickLabel(0.0003) == "0.0003" && tickLabel(0.00003) == "3e-05" && tickLabel(0.002) == "0.002"
                && tickLabel(2000) == "2000" && tickLabel(4.5) == "4.5")
    }
}
