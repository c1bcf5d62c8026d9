// The plan's parameter counts for the paper's models, and the loss chart.
import Configuration
import Foundation
import Support
import Testing
import Tools

@Suite struct PlanTests {
    @Test func planCountsThePapersModels() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        func plan(_ name: String, ranks: Int) throws -> TrainingPlan {
            try TrainingPlan(config: RunConfig.load(path: "\(root)/configs/\(name).json"), ranks: ranks)
        }
        #expect(try plan("llama2-7b", ranks: 64).parameters == 6_738_415_616)  // Hugging Face's count for Llama-2-7b
        #expect(try plan("llama2-13b", ranks: 64).parameters == 13_015_864_320)
        #expect(try plan("llama2-70b", ranks: 64).parameters == 68_976_648_192)
        #expect(abs(Double(try plan("llama2-34b", ranks: 64).parameters) / 1e9 - 33.7) < 0.1)
        let p = try plan("llama2-7b", ranks: 64)
        #expect(p.accumulationSteps == 16 && p.tokensPerStep == 4_194_304 && p.allreduceBytesPerStep == 4 * p.parameters)
        #expect(p.memoryPerRankBytes == 16 * p.parameters + p.activationBytes)
        #expect(throws: ConfigError.self) { try plan("llama2-7b", ranks: 3) }
        #expect(throws: ConfigError.self) { try plan("llama2-7b", ranks: 2048) }
    }
}

@Suite struct ChartTests {
    @Test func svgHasBothCurves() throws {
        let path = NSTemporaryDirectory() + "metrics-\(UUID().uuidString).jsonl"
        let lines = (1...20).map { "{\"step\": \($0), \"loss\": \(8.0 - Double($0) * 0.2), \"lr\": \(Double($0) * 1e-4)}" }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let svg = try LossChart.svg(metricsPath: path, title: "t")
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<path").count == 3)
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try LossChart.svg(metricsPath: path, title: "t") } throws: { "\($0)".contains(":1") }
    }
}
