// Sharded data parallelism under a real mpirun: every mode (optimizer, gradients, full) trains the model that
// replicated training trains, on 2 and 3 ranks with accumulation; checkpoints resume bitwise in the same mode
// and world size, and across modes and world sizes.
import Foundation
import TestSupport
import Testing

/// Each tensor of a safetensors file by name, its bytes read as `T` (Float for F32, UInt16 for BF16); only
/// tensors of `dtype` when one is given.
func rawTensors<T>(_ path: String, as _: T.Type, dtype: String? = nil) throws -> [String: [T]] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let headerLength = Int(
        data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as! [String: Any]
    var out: [String: [T]] = [:]
    for (name, entry) in header where name != "__metadata__" {
        let fields = entry as! [String: Any]
        if let dtype, fields["dtype"] as? String != dtype { continue }
        let offsets = fields["data_offsets"] as! [Int]
        out[name] = data.subdata(in: (8 + headerLength + offsets[0])..<(8 + headerLength + offsets[1])).withUnsafeBytes
        { Array($0.bindMemory(to: T.self)) }
    }
    return out
}

/// Each tensor of a safetensors file by name, as float32 values.
func tensors(_ path: String) throws -> [String: [Float]] { try rawTensors(path, as: Float.self) }

/// The largest per-tensor difference relative to the tensor's own largest magnitude, and its tensor.
func worstRelativeDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> (Double, String) {
    var worst = (0.0, "")
    for (name, x) in b {
        guard let y = a[name], y.count == x.count else { return (.infinity, name) }
        let scale = Double(x.map { abs($0) }.max() ?? 0)  // a NaN here makes the difference below infinite
        let diff = Double(maxDifference(x, y)) / max(scale, 1e-12)
        if !(diff <= worst.0) { worst = (diff, name) }
    }
    return worst
}

@Suite(.serialized) struct ShardingTests {
    /// 12 sequences per step: accumulation 3 on 2 ranks and 2 on 3, 8 steps. fp32: the modes differ only in
    /// the order of fp32 additions, and in bf16 a weight nudged by 1e-7 across a rounding boundary moves its
    /// bf16 copy by 2^-8, which comparisons at 1e-5 would read as a sharding bug.
    static func config(_ dir: String) throws -> String {
        let path = dir + "/shard.json"
        try """
        {"model": {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 200, "ffn_hidden_size": 96, "max_seq_len": 16},
         "train": {"seq_len": 16, "micro_batch": 2, "global_batch_tokens": 192, "steps": 8, "lr": 1e-3, "warmup_steps": 1, "seed": 3,
                   "synthetic_ignore_fraction": 0.3, "precision": "fp32"}}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(arguments: [2, 3])
    func everyModeTrainsTheReplicatedModel(ranks: Int) throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try Self.config(dir)
        for mode in ["none", "optimizer", "gradients", "full"] {
            let r = try run(
                mpirunFast + [
                    "-np", "\(ranks)", tool, "pretrain", "--config", config, "--sharding", mode, "--out",
                    "\(dir)/\(mode)",
                ])
            #expect(r.status == 0, "\(mode): \(r.stderr)")
        }
        let reference = try tensors(dir + "/none/model.safetensors")
        #expect(reference.count == 2 * 9 + 3)
        for mode in ["optimizer", "gradients", "full"] {
            let (worst, name) = worstRelativeDifference(try tensors("\(dir)/\(mode)/model.safetensors"), reference)
            #expect(worst <= 1e-5, "\(mode) on \(ranks) ranks: \(name) differs by \(worst) of its largest value")
        }
        // --no-prefetch gathers the same units on the other thread: the same model, bit for bit.
        let r = try run(
            mpirunFast + [
                "-np", "\(ranks)", tool, "pretrain", "--config", config, "--sharding", "full", "--no-prefetch", "--out",
                "\(dir)/full-noprefetch",
            ])
        #expect(r.status == 0, "full --no-prefetch: \(r.stderr)")
        #expect(try tensors("\(dir)/full-noprefetch/model.safetensors") == tensors("\(dir)/full/model.safetensors"))
    }

    /// Stopped and resumed in the same mode on the same ranks: bitwise. A checkpoint written fully sharded on
    /// 2 ranks (pieces of every unit) resumes replicated on 3, one written replicated on 2 (flat ranges, as
    /// every checkpoint before balanced units) resumes fully sharded on 3, and one of `gradients` resumes under
    /// `optimizer`.
    @Test func checkpointsResumeAcrossModesAndWorldSizes() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try Self.config(dir)
        func train(_ ranks: Int, _ mode: String, _ extra: [String]) throws -> Run {
            let r = try run(
                mpirunFast + ["-np", "\(ranks)", tool, "pretrain", "--config", config, "--sharding", mode] + extra)
            #expect(r.status == (extra.contains("--stop-after") ? 75 : 0), "\(ranks) ranks, \(mode): \(r.stderr)")
            return r
        }
        _ = try train(2, "full", ["--out", dir + "/whole"])
        _ = try train(2, "full", ["--checkpoint-dir", dir + "/same", "--stop-after", "4"])
        _ = try train(2, "full", ["--checkpoint-dir", dir + "/same", "--out", dir + "/same-out"])
        #expect(
            FileManager.default.contents(atPath: dir + "/whole/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/same-out/model.safetensors"),
            "full on 2 ranks, stopped and resumed, must equal the uninterrupted run bit for bit")
        let reference = try tensors(dir + "/whole/model.safetensors")
        for (first, second) in [("full", "none"), ("none", "full"), ("gradients", "optimizer")] {
            _ = try train(2, first, ["--checkpoint-dir", "\(dir)/\(first)-\(second)", "--stop-after", "4"])
            let resumed = try train(
                3, second, ["--checkpoint-dir", "\(dir)/\(first)-\(second)", "--out", "\(dir)/\(first)-\(second)-out"])
            #expect(resumed.stdout.contains("saved on 2 rank(s), now 3"), "\(resumed.stdout)")
            let (worst, name) = worstRelativeDifference(
                try tensors("\(dir)/\(first)-\(second)-out/model.safetensors"), reference)
            #expect(worst <= 1e-5, "\(first) on 2 → \(second) on 3: \(name) differs by \(worst)")
        }
    }
}

@Suite(.serialized) struct NodeMemoryTests {
    /// Ranks on one node divide its memory (found with MPI_Comm_split_type): a model that one rank could
    /// train here (about 10 GiB replicated) is refused before anything is allocated when three ranks share
    /// the node, the message saying so, and `plan --ranks-per-node 3` says it does not fit.
    @Test func ranksOnANodeShareItsMemory() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = dir + "/big.json"
        try """
        {"model": {"dim": 2048, "n_layers": 10, "n_heads": 16, "vocab_size": 32000, "ffn_hidden_size": 5632, "max_seq_len": 64},
         "train": {"seq_len": 64, "micro_batch": 1, "global_batch_tokens": 192, "steps": 1, "precision": "fp32"}}
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let plan = try run([tool, "plan", "--config", config, "--ranks", "3", "--ranks-per-node", "3", "--json"])
        let json = try #require(plan.stdout.split(separator: "\n").last)
        let fields = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let perRank = fields["memory_per_rank_bytes"] as! Int
        let machine = Int(ProcessInfo.processInfo.physicalMemory)
        try #require(perRank < machine && 3 * perRank > machine, "the test's premise: \(perRank) bytes per rank")
        #expect(fields["fits_this_node"] as? Bool == false && plan.stdout.contains("does not fit"))
        let three = try run(mpirunFast + ["-np", "3", tool, "pretrain", "--config", config])
        expectRefused(three, "for each of the 3 ranks on this node", "3 ranks sharing the node")
        // With checkpoints, a save's copy of the shard is counted: 12 bytes per owned parameter.
        let withCheckpoints = try run([tool, "plan", "--config", config, "--ranks", "3", "--checkpoints", "--json"])
        let fieldsWith =
            try JSONSerialization.jsonObject(
                with: Data(try #require(withCheckpoints.stdout.split(separator: "\n").last).utf8)) as! [String: Any]
        let parameters = fields["parameters"] as! Int
        #expect(fieldsWith["checkpoint_staging_bytes"] as? Int == 12 * ((parameters + 2) / 3))
        #expect((fieldsWith["memory_per_rank_bytes"] as! Int) - perRank == 12 * ((parameters + 2) / 3))
    }
}
