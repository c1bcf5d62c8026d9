// The α-β scaling model: the ring formula, overlap, the collectives as the trainer issues them (pieces, hops,
// the two slots of `full`), and the reasons it gives when efficiency falls.
import Configuration
import Foundation
import Model
import Testing

@testable import Tools

@Suite struct ScalingSimulatorTests {
    let fast = ClusterModel(flopsPerRank: 1e12, latency: 5e-6, bandwidth: 12.5e9, optimizerSecondsPerParameter: 1e-10)

    @Test func ringAllreduceCost() {
        #expect(ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 1, cluster: fast) == 0)
        // 2 ranks: 2 hops of latency and one buffer's worth of traffic.
        #expect(
            abs(ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 2, cluster: fast) - (2 * 5e-6 + 1e9 / 12.5e9))
                < 1e-12)
        // Many ranks: the bandwidth term tends to 2 B / β, the latency term grows linearly.
        let t = ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 1000, cluster: fast)
        #expect(abs(t - (2 * 999 * 5e-6 + 2 * 0.999 * 1e9 / 12.5e9)) < 1e-9)
    }

    @Test func oneRankIsFullyEfficientAndOverlapHidesCommunication() {
        let one = ScalingSimulator.predict(
            parameters: 1_000_000, flopsPerToken: 6e6, ranks: 1, tokensPerRank: 100_000,
            microTokens: 10_000, bucketBytes: 1 << 20, cluster: fast)
        #expect(one.efficiency == 1 && one.exposedCommS == 0 && one.limit == nil)
        // Plenty of backward to hide 4 MB of gradients: only about the last bucket shows.
        let two = ScalingSimulator.predict(
            parameters: 1_000_000, flopsPerToken: 6e6, ranks: 2, tokensPerRank: 100_000,
            microTokens: 10_000, bucketBytes: 1 << 20, cluster: fast)
        let lastBucket = ScalingSimulator.ringAllreduceSeconds(bytes: 1e6, ranks: 2, cluster: fast)
        #expect(two.exposedCommS <= lastBucket * 1.01 && two.efficiency > 0.99)
    }

    @Test func limitsAreNamed() {
        // Little compute per rank (a fast node), one micro-step, huge model: communication cannot hide.
        let petaflop = ClusterModel(
            flopsPerRank: 1e15, latency: 5e-6, bandwidth: 12.5e9, optimizerSecondsPerParameter: 0)
        let starved = ScalingSimulator.predict(
            parameters: 7_000_000_000, flopsPerToken: 4.2e10, ranks: 1024, tokensPerRank: 4096,
            microTokens: 4096, bucketBytes: 25 << 20, cluster: petaflop)
        #expect(
            starved.efficiency < 0.9 && starved.limit?.hasPrefix("too little compute") == true,
            "\(starved.limit ?? "nil")")
        let slowLinks = ClusterModel(flopsPerRank: 1e12, latency: 1e-6, bandwidth: 1e8, optimizerSecondsPerParameter: 0)
        let bound = ScalingSimulator.predict(
            parameters: 100_000_000, flopsPerToken: 6e8, ranks: 8, tokensPerRank: 2000,
            microTokens: 1000, bucketBytes: 25 << 20, cluster: slowLinks)
        #expect(bound.limit?.hasPrefix("bandwidth-bound") == true, "\(bound.limit ?? "nil")")
        let highLatency = ClusterModel(
            flopsPerRank: 1e12, latency: 0.05, bandwidth: 1e12, optimizerSecondsPerParameter: 0)
        let latent = ScalingSimulator.predict(
            parameters: 100_000_000, flopsPerToken: 6e8, ranks: 64, tokensPerRank: 2000,
            microTokens: 1000, bucketBytes: 1 << 20, cluster: highLatency)
        #expect(latent.limit?.hasPrefix("latency-bound") == true, "\(latent.limit ?? "nil")")
        let shared = ClusterModel(
            flopsPerRank: 1e12, latency: 1e-9, bandwidth: 1e15, optimizerSecondsPerParameter: 0, cores: 2)
        let over = ScalingSimulator.predict(
            parameters: 1000, flopsPerToken: 6e6, ranks: 4, tokensPerRank: 10_000,
            microTokens: 1000, bucketBytes: 1 << 20, cluster: shared)
        #expect(abs(over.efficiency - 0.5) < 1e-6 && over.limit?.contains("cores") == true)
    }
}

@Suite struct CollectivesAsImplementedTests {
    static let links = ClusterModel(flopsPerRank: 1e12, latency: 0, bandwidth: 12.5e9, optimizerSecondsPerParameter: 0)

    /// 70B on 1024 ranks: a block's gather moves ⌈S/N⌉ per ring step when units are balanced, and under the
    /// flat layout the largest rank's overlap with the block, up to ⌈P/N⌉ (the issue's 22 s against 0.27 s).
    @Test func aBlockGatherOfSeventyBOnAThousandRanks() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let layout = ParameterLayout(config: try RunConfig.load(path: root + "/configs/llama2-70b.json").model)
        let units = layout.units.map(\.count)
        func blockGather(_ layout: UnitLayout) -> Double {
            let c = ScalingSimulator.communication(
                units: units, ranks: 1024, accumulation: 1, sharding: .full, bucketBytes: 25 << 20, layout: layout)
            let gather = c.collectives.filter { $0.name.hasPrefix("allgather") }[1]  // block 0
            return gather.cost.seconds(Self.links) / Double(gather.count)
        }
        let (balanced, flat) = (blockGather(.balanced), blockGather(.flat))
        #expect(abs(balanced - 1023 * 4 * Double((units[1] + 1023) / 1024) / 12.5e9) < 1e-9)
        #expect(balanced > 0.2 && balanced < 0.35, "\(balanced)")
        #expect(flat > 15 && flat < 30 && flat > 50 * balanced, "\(flat) s against \(balanced) s")
    }

    /// The two slots: forward gathers every unit, backward reuses the last two, the next micro-step's forward
    /// the first two; after the optimizer step everything is gathered again.
    @Test func fullGathersReplayTheSlots() {
        #expect(ScalingSimulator.fullGathers(units: 10, accumulation: 1).reduce(0, +) == 18)
        let twoMicroSteps: Int = ScalingSimulator.fullGathers(units: 10, accumulation: 2).reduce(0, +)
        #expect(twoMicroSteps == 34, "10 in the first forward, then 8 in each of three passes")
        #expect(ScalingSimulator.fullGathers(units: 10, accumulation: 1) == [2, 2, 2, 2, 2, 2, 2, 2, 1, 1])
        let none = ScalingSimulator.communication(
            units: [100, 100], ranks: 4, accumulation: 3, sharding: .none, bucketBytes: 400)
        #expect(none.collectives.map(\.count) == [2, 2] && none.collectives.allSatisfy { $0.hops == 3 })
        #expect(none.total.bytes == 2 * 2 * 3 * 100, "two buckets of 400 bytes, pieces of 100, 3 hops each way")
    }
}

/// The lab calibration recovers what made the measurements: a lab.json whose communication per step is priced
/// with known per-world-size rates (call latency, β, and γ for a communication thread's bytes) gives those
/// rates back and predicts every run it was fitted on; `full-noprefetch` (the same collectives as `full`, all on
/// the compute thread) is what separates γ from β.
@Suite struct LabCalibrationTests {
    @Test func perWorldSizeRatesAreRecovered() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..")
        let configPath = root.appendingPathComponent("configs/lab-8blocks.json").standardizedFileURL.path
        let configObject = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath)))
        let config = try RunConfig.load(path: configPath)
        let units = ParameterLayout(config: config.model).units.map(\.count)
        let truth: [Int: (call: Double, bandwidth: Double, gamma: Double)] = [
            2: (0.030, 24e6, 0.5), 3: (0.005, 22e6, 0.0), 4: (0.025, 17e6, 0.1),
        ]
        var results: [[String: Any]] = []
        for (n, t) in truth {
            for label in ["none", "optimizer", "gradients", "full", "full-noprefetch"] {
                let mode = ShardingMode(rawValue: label.replacingOccurrences(of: "-noprefetch", with: ""))!
                let c = ScalingSimulator.communication(
                    units: units, ranks: n, accumulation: 1, sharding: mode,
                    bucketBytes: Int(config.train.bucketMB * 1_048_576), prefetch: label == mode.rawValue)
                let comm = c.total.calls * t.call + (c.total.bytes + t.gamma * c.threaded.bytes) / t.bandwidth
                results.append([
                    "ranks": n, "mode": label, "comm_s": comm, "compute_s": 0.2, "exposed_comm_s": comm,
                    "step_s": comm + 0.25,
                ])
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("lab.json").path
        try JSONSerialization.data(withJSONObject: [
            "results": results, "rate_bits_per_s": 200e6, "run_config": configObject, "cores": "2",
        ]).write(to: URL(fileURLWithPath: path))
        var lines: [String] = []
        let (model, _, validation) = try ScalingCalibration.fitLab(path: path) { lines.append($0) }
        #expect(validation.count == results.count)
        for v in validation {
            let error = try #require(v["comm_error"] as? Double)
            #expect(abs(error) < 1e-6, "\(v)")
        }
        // The largest world size's rates go beyond the lab.
        #expect(abs(model.bandwidth / 17e6 - 1) < 1e-6 && abs(model.threadSlowdown - 0.1) < 1e-6)
        #expect(abs(model.callLatency - 0.025) < 1e-6)
        #expect(lines.contains { $0.contains("2 ranks") && $0.contains("γ 0.50") }, "\(lines)")
    }
}
