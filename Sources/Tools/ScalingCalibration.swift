// Calibrating the scaling simulator: the α-β model's rates fitted to a cluster/bench-scaling.sh run (compute
// and optimizer from the 1-rank weak result, β from the raw 25 MB allreduce, α from the small-message one),
// then every measured configuration predicted again, so the fit is checked against what it was fitted on.
// What this is not: the model itself (ScalingSimulator.swift) or the command (Launcher/SimulateCommand.swift).
import Configuration
import Foundation
import Model

public struct CalibrationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum ScalingCalibration {
    /// Fits the model to a bench-scaling run; `log` gets the fit and predicted against measured step times.
    public static func fit(path: String, log: (String) -> Void) throws -> (ClusterModel, [[String: Any]]) {
        guard let data = FileManager.default.contents(atPath: path),
            let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let results = root["results"] as? [[String: Any]], let configObject = root["config"]
        else { throw CalibrationError("\(path): not a scaling.json written by cluster/bench-scaling.sh") }
        let config = try JSONDecoder().decode(
            RunConfig.self, from: JSONSerialization.data(withJSONObject: configObject))
        let layout = ParameterLayout(config: config.model)
        let flops = ParameterLayout.flopsPerToken(config.model, seqLen: config.train.seqLen)
        func number(_ r: [String: Any], _ k: String) -> Double? { (r[k] as? NSNumber)?.doubleValue }
        guard let one = results.first(where: { $0["mode"] as? String == "weak" && number($0, "ranks") == 1 }),
            let tokens = number(one, "tokens_per_step"), let compute = number(one, "compute_s"),
            let optimizer = number(one, "optimizer_s")
        else { throw CalibrationError("\(path): needs the weak 1-rank result with compute_s and optimizer_s") }
        let multi = results.filter { number($0, "ranks") ?? 1 > 1 }
        let bandwidth = multi.compactMap { number($0, "bus_bytes_per_s_raw_mpi_25mb_messages") }.max() ?? 1e9
        let latency =
            multi.compactMap { r -> Double? in
                guard let t = number(r, "raw_small_seconds"), let n = number(r, "ranks") else { return nil }
                return t / (2 * (n - 1))
            }.min() ?? 1e-5
        let cores = ((root["machine"] as? [String: Any])?["cores"] as? NSNumber)?.intValue
        let model = ClusterModel(
            flopsPerRank: flops * tokens / compute, latency: latency, bandwidth: bandwidth,
            optimizerSecondsPerParameter: optimizer / Double(layout.count), cores: cores)
        log(
            String(
                format:
                    "calibrated from %@: %.1f GFLOP/s per rank, α %.1f µs, β %.2f GB/s, optimizer %.2f ns/parameter, %d cores",
                path, model.flopsPerRank / 1e9, latency * 1e6, bandwidth / 1e9,
                model.optimizerSecondsPerParameter * 1e9, cores ?? 0))
        log("  mode    ranks  measured step s  predicted step s   error   measured eff.  predicted eff.")
        var validation: [[String: Any]] = []
        let seq = config.train.seqLen
        for r in results.sorted(by: {
            ($0["mode"] as! String, number($0, "ranks")!) < ($1["mode"] as! String, number($1, "ranks")!)
        }) {
            guard let mode = r["mode"] as? String, let n = number(r, "ranks"),
                let tokens = number(r, "tokens_per_step"),
                let measured = number(r, "step_s")
            else { continue }
            let ranks = Int(n), perRank = Int(tokens) / ranks
            let micro = mode == "weak" ? config.train.microBatch * seq : perRank
            let p = ScalingSimulator.predict(
                parameters: layout.count, flopsPerToken: flops, ranks: ranks, tokensPerRank: perRank,
                microTokens: micro, bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: model)
            let error = (p.stepS - measured) / measured
            let measuredEfficiency = number(r, "per_rank_efficiency") ?? 0
            // Predicted per-rank efficiency relative to the same mode's 1-rank prediction.
            let base = ScalingSimulator.predict(
                parameters: layout.count, flopsPerToken: flops, ranks: 1,
                tokensPerRank: mode == "weak" ? perRank : Int(tokens),
                microTokens: mode == "weak" ? micro : Int(tokens),
                bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: model)
            let predictedEfficiency = mode == "weak" ? base.stepS / p.stepS : base.stepS / (Double(ranks) * p.stepS)
            log(
                String(
                    format: "  %-6@  %5d  %15.3f  %16.3f  %+6.1f%%  %14.3f  %14.3f", mode, ranks, measured, p.stepS,
                    100 * error,
                    measuredEfficiency, predictedEfficiency))
            validation.append([
                "mode": mode, "ranks": ranks, "measured_step_s": measured, "predicted_step_s": p.stepS, "error": error,
                "measured_efficiency": measuredEfficiency, "predicted_efficiency": predictedEfficiency,
            ])
        }
        return (model, validation)
    }
}
