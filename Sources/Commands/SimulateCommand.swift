// `llama-train plan --simulate`: the α-β scaling model (Tools/ScalingSimulator.swift), calibrated from a
// rate-limited lab run (cluster/lab-scaling.sh) or a cluster/bench-scaling.sh run (Tools/ScalingCalibration.swift)
// or given a target cluster, checked against the measurements and applied to the paper's configs from 1 rank to
// as many as the global batch allows. With a lab calibration and --link-gbps, the target's links deliver the
// share of their rate that the lab's did.
import Checkpoint
import Configuration
import FineTune
import Foundation
import Model
import Support
import Tools
import Training

enum SimulateCommand {
    static func run(_ args: inout Arguments) throws {
        let calibrationPath = args.string("calibration")
        let tflops = args.number("node-tflops")
        let gbps = args.number("link-gbps")
        let latencyUs = args.number("latency-us")
        let maxRanks = args.int(declared: "max-ranks")
        let configs = args.list("configs")
        let json = args.flag("json")

        let layout = UnitLayout(rawValue: args.string(declared: "layout"))!
        var calibrated: ClusterModel?
        var report: [String: Any] = [:]
        var linkShare: Double?  // a lab's achieved bandwidth over its link rate
        if let path = calibrationPath {
            let isLab =
                FileManager.default.contents(atPath: path).map { $0.range(of: Data("\"rate_bits_per_s\"".utf8)) != nil }
                ?? false
            let (model, validation): (ClusterModel, [[String: Any]])
            if isLab {
                let fit = try ScalingCalibration.fitLab(path: path, log: { print($0) })
                (model, validation, linkShare) = (fit.0, fit.validation, fit.0.bandwidth / fit.linkBytesPerS)
            } else {
                (model, validation) = try ScalingCalibration.fit(path: path, log: { print($0) })
            }
            calibrated = model
            report["calibration"] = [
                "flops_per_rank": model.flopsPerRank, "latency_s": model.latency,
                "bandwidth_bytes_per_s": model.bandwidth,
                "optimizer_s_per_parameter": model.optimizerSecondsPerParameter, "cores": model.cores ?? 0,
                "call_latency_s": model.callLatency,
            ]
            report["validation"] = validation
        }
        var target: ClusterModel
        if tflops != nil && (args.string("threads-per-rank") != nil || args.string("thread-efficiency") != nil) {
            throw UsageError(
                "--threads-per-rank and --thread-efficiency scale a calibrated rank; --node-tflops already gives the whole node's rate"
            )
        }
        if let tflops, let gbps, let latencyUs {
            target = ClusterModel(
                flopsPerRank: tflops * 1e12, latency: latencyUs * 1e-6, bandwidth: gbps * 1e9 / 8,
                optimizerSecondsPerParameter: calibrated?.optimizerSecondsPerParameter ?? 2e-10)
            if let c = calibrated {  // the optimizer is memory-bound: scale it by the compute ratio as a rough guide
                target.optimizerSecondsPerParameter =
                    c.optimizerSecondsPerParameter * c.flopsPerRank / target.flopsPerRank
            }
            print(
                String(
                    format: "target cluster: %.1f TFLOP/s per node, %.0f Gb/s links, %.1f µs latency", tflops, gbps,
                    latencyUs))
        } else if var c = calibrated {
            c.cores = nil  // one rank per node of this machine's speed
            if let gbps, let share = linkShare {
                c.bandwidth = gbps * 1e9 / 8 * share
                // The lab's per-call cost is its TCP flows'; a target given its latency has that instead.
                if let latencyUs { (c.latency, c.callLatency) = (latencyUs * 1e-6, 0) }
                print(
                    String(
                        format:
                            "target links: %.0f Gb/s delivering %.0f%% of it as the lab's did, %.0f µs per hop, %.1f ms per call",
                        gbps, 100 * share, c.latency * 1e6, c.callLatency * 1e3))
            }
            // A rank is a whole node: T threads at the efficiency measured for --threads here (bench-small,
            // 2 threads against 1: 1.82× fp32, 1.77–1.80× bf16, so 0.9 by default). The optimizer is threaded too.
            let threads = args.int(declared: "threads-per-rank")
            let efficiency = args.number(declared: "thread-efficiency")
            let speedup = threads == 1 ? 1 : Double(threads) * efficiency
            c.flopsPerRank *= speedup
            c.optimizerSecondsPerParameter /= speedup
            target = c
            print(
                "target cluster: nodes like this machine, one rank per node of \(threads) thread(s) (\(String(format: "%.2f", speedup))× one core's rate), with the calibration's links\(linkShare == nil ? "" : " unless --link-gbps is given")"
            )
        } else {
            throw UsageError(
                "give --calibration runs/scaling/scaling.json, or --node-tflops, --link-gbps and --latency-us")
        }
        let paths =
            configs.isEmpty
            ? [
                "configs/llama2-7b.json", "configs/llama2-13b.json", "configs/llama2-34b.json",
                "configs/llama2-70b.json",
            ] : configs
        var predictions: [String: Any] = [:]
        for path in paths {
            var config = try RunConfig.load(path: path)
            PretrainCommand.applyOverrides(&config, args)
            try config.validate(file: path)
            let parameterLayout = ParameterLayout(config: config.model)
            let flops = ParameterLayout.flopsPerToken(config.model, seqLen: config.train.seqLen)
            let sequences = config.train.globalBatchSequences
            let sharded = config.train.sharding == .gradients || config.train.sharding == .full
            let units =
                !sharded
                ? ""
                : layout == .balanced
                    ? ", units balanced (⌈S/N⌉ of each of \(parameterLayout.units.count) units per rank)"
                    : ", units flat (one range of ⌈P/N⌉ per rank over the whole model)"
            print(
                "\n\(path): \(parameterLayout.count) parameters, \(config.train.globalBatchTokens) tokens per step, sharding \(config.train.sharding.rawValue)\(units), recompute \(config.train.recompute.rawValue)"
            )
            print(
                "  ranks  tokens/rank  micro-steps    step s   compute s      comm s   exposed s  optimizer s  efficiency  GiB/rank"
            )
            var rows: [[String: Any]] = []
            var firstBelow: ScalingPrediction?
            var ranks = 1
            while ranks <= min(maxRanks, sequences) {
                let p = ScalingSimulator.predict(
                    parameters: parameterLayout.count, flopsPerToken: flops, ranks: ranks,
                    tokensPerRank: config.train.globalBatchTokens / ranks,
                    microTokens: config.train.microBatch * config.train.seqLen,
                    bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: target,
                    sharding: config.train.sharding, units: parameterLayout.units.map(\.count), layout: layout)
                let memory = Double(config.rankMemory(ranks: ranks)?.total ?? 0) / 1_073_741_824
                print(
                    String(
                        format: "  %5d  %11d  %11d  %8.3g  %10.3g  %10.3g  %10.3g  %11.3g  %10.3f  %8.1f", p.ranks,
                        p.tokensPerRank, p.accumulationSteps,
                        p.stepS, p.computeS, p.commS, p.exposedCommS, p.optimizerS, p.efficiency, memory))
                if firstBelow == nil && p.efficiency < 0.9 { firstBelow = p }
                rows.append([
                    "ranks": p.ranks, "step_s": p.stepS, "comm_s": p.commS, "exposed_comm_s": p.exposedCommS,
                    "efficiency": p.efficiency,
                    "memory_per_rank_bytes": config.rankMemory(ranks: ranks)?.total ?? 0, "limit": p.limit ?? "",
                ])
                ranks *= 2
            }
            if let p = firstBelow {
                print("  efficiency falls below 90% at \(p.ranks) ranks: \(p.limit ?? "?")")
            } else {
                print("  efficiency stays at or above 90% up to \(min(maxRanks, sequences)) ranks")
            }
            if sequences < maxRanks {
                print(
                    "  beyond \(sequences) ranks the \(sequences)-sequence global batch no longer splits: a larger batch or sequence/tensor parallelism is needed"
                )
            }
            predictions[path] = rows
        }
        report["predictions"] = predictions
        if json {
            print(
                String(
                    decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self)
            )
        }
    }
}
