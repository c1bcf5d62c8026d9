// The validation loss and `llama-train eval`: the loss a run logs at --eval-every steps equals an offline eval
// of its saved model on the same windows, on 1 and 3 ranks and at another micro-batch (held-out windows of
// train.data, and train.eval_data's shards under sharding full on 2 ranks, where a rank runs an empty batch);
// multiple-choice accuracy is the argmax of `score`'s log-likelihoods, summed and per token; bad input is
// refused naming the file, line or key.
import Foundation
import Testing

@Suite(.serialized) struct EvalTests {
    /// A workspace with the fine-tuning tests' tokenizer and model, and two prepared directories of plain text.
    func workspace() throws -> String {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let words = ["river", "garden", "teacher", "numbers", "the", "a", "sea", "flows", "kind", "and", "12", "345"]
        func documents(_ seed: Int, _ count: Int) -> String {
            (0..<count).map { d in
                (0..<(8 + (d * 7 + seed) % 13)).map { words[(d * 31 + $0 * 17 + seed) % words.count] }
                    .joined(separator: " ")
            }.joined(separator: "\n%\n")
        }
        for (name, seed, count) in [("docs", 1, 300), ("held", 5, 60)] {
            try documents(seed, count).write(toFile: "\(dir)/\(name).txt", atomically: true, encoding: .utf8)
            let r = try run([
                tool, "prepare", "--tokenizer", dir + "/tok.model", "--delimiter", "%", "--input",
                "\(name)=\(dir)/\(name).txt", "--out", "\(dir)/\(name)",
            ])
            try #require(r.status == 0, "\(r.stderr)")
        }
        return dir
    }

    func config(_ dir: String, _ extra: String) -> String {
        #"""
        {"model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 32},
         "train": {"seq_len": 32, "micro_batch": 4, "global_batch_tokens": 256, "steps": 6, "lr": 1e-3, "warmup_steps": 1,
                   "precision": "fp32", "data": "\#(dir)/docs", "tokenizer": "\#(dir)/tok.model", \#(extra)}}
        """#
    }

    func rows(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// The JSON summary `eval` prints last.
    func evalLoss(_ launcher: [String], _ args: [String]) throws -> Double? {
        let r = try run(launcher + [try toolPath(), "eval"] + args)
        #expect(r.status == 0, "\(r.stderr)")
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return (try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])?["loss"] as? Double
    }

    @Test func validationLossIsTheOfflineEvalOnAnyRankCount() throws {
        let tool = try toolPath()
        let dir = try workspace()
        // Held out of train.data: a validation loss at steps 3 and 6, in the progress line and the metrics.
        try config(dir, #""eval_holdout": 0.1, "eval_windows": 10"#)
            .write(toFile: dir + "/held.json", atomically: true, encoding: .utf8)
        let r = try run([
            tool, "pretrain", "--config", dir + "/held.json", "--out", dir + "/m1", "--metrics", dir + "/m1.jsonl",
            "--eval-every", "3",
        ])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("step 3/6 | loss") && r.stdout.contains("| val loss "), "\(r.stdout)")
        let metrics = try rows(dir + "/m1.jsonl")
        #expect(metrics.compactMap { $0["val_loss"] == nil ? nil : $0["step"] as? Int } == [3, 6])
        #expect(metrics.last?["val_tokens"] as? Int == 10 * 32)
        let logged = try #require(metrics.last?["val_loss"] as? Double)
        let offline = ["--checkpoint", dir + "/m1", "--data", dir + "/docs", "--holdout", "0.1", "--seq-len", "32"]
        for (launcher, batch) in [([String](), "4"), (mpirunFast + ["-np", "3"], "3")] {
            let loss = try #require(try evalLoss(launcher, offline + ["--windows", "10", "--micro-batch", batch]))
            #expect(abs(loss - logged) <= 1e-9 * logged, "eval \(loss) against the run's \(logged)")
        }
        // Every held-out window is another loss.
        let all = try #require(try evalLoss([], offline))
        #expect(all != logged)

        // train.eval_data under sharding full on 2 ranks: 9 windows in 3 batches, so rank 1 runs an empty one.
        try config(dir, #""eval_data": "\#(dir)/held", "eval_windows": 9, "sharding": "full""#)
            .write(toFile: dir + "/data.json", atomically: true, encoding: .utf8)
        let two = try run(
            mpirunFast + ["-np", "2"] + [
                tool, "pretrain", "--config", dir + "/data.json", "--out", dir + "/m2", "--metrics", dir + "/m2.jsonl",
            ])
        try #require(two.status == 0, "\(two.stderr)")
        let second = try rows(dir + "/m2.jsonl")
        #expect(second.compactMap { $0["val_loss"] == nil ? nil : $0["step"] as? Int } == [6])
        let logged2 = try #require(second.last?["val_loss"] as? Double)
        let loss2 = try #require(
            try evalLoss(
                [], ["--checkpoint", dir + "/m2", "--data", dir + "/held", "--windows", "9", "--seq-len", "32"]))
        #expect(abs(loss2 - logged2) <= 1e-9 * logged2, "eval \(loss2) against the run's \(logged2)")

        // Both sources of windows at once, or a holdout without data: refused naming the key.
        try config(dir, #""eval_data": "\#(dir)/held", "eval_holdout": 0.1"#)
            .write(toFile: dir + "/both.json", atomically: true, encoding: .utf8)
        let both = try run([tool, "pretrain", "--config", dir + "/both.json"])
        #expect(both.status != 0 && both.stderr.contains("train.eval_holdout"), "\(both.stderr)")
    }

    @Test func choicesAccuracyIsTheArgmaxOfScoredLikelihoods() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let examples: [(String, [String], Int)] = [
            ("the river", ["flows to the sea", "garden", "12 and 345 and more"], 0),
            ("numbers like", ["12", "the teacher is kind", "a"], 2),
            ("hello", ["world", "river river river", "sea", "kind"], 1),
            ("the teacher is", ["kind", "awful and long and slow"], 0),
            ("what is", ["the capital", "12"], 1),
        ]
        var lines: [String] = [], pairs: [String] = []
        for (context, endings, label) in examples {
            let o: [String: Any] = ["context": context, "endings": endings, "label": label]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: o), as: UTF8.self))
            for e in endings {
                let p: [String: Any] = ["prompt": context, "completion": " " + e]
                pairs.append(String(decoding: try JSONSerialization.data(withJSONObject: p), as: UTF8.self))
            }
        }
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: dir + "/choices.jsonl", atomically: true, encoding: .utf8)
        try (pairs.joined(separator: "\n") + "\n").write(
            toFile: dir + "/pairs.jsonl", atomically: true, encoding: .utf8)
        let scored = try run([
            tool, "score", "--checkpoint", dir + "/pre", "--data", dir + "/pairs.jsonl", "--out", dir + "/scored.jsonl",
        ])
        try #require(scored.status == 0, "\(scored.stderr)")
        let scores = try rows(dir + "/scored.jsonl").map {
            (sum: $0["logprob"] as! Double, mean: ($0["logprob"] as! Double) / Double($0["tokens"] as! Int))
        }
        var (correct, correctNorm, at) = (0.0, 0.0, 0)
        for (_, endings, label) in examples {
            let mine = Array(scores[at..<(at + endings.count)])
            at += endings.count
            correct += mine.indices.max { mine[$0].sum < mine[$1].sum } == label ? 1 : 0
            correctNorm += mine.indices.max { mine[$0].mean < mine[$1].mean } == label ? 1 : 0
        }
        for launcher in [[], mpirunFast + ["-np", "2"]] {
            let r = try run(
                launcher + [tool, "eval", "--checkpoint", dir + "/pre", "--choices", dir + "/choices.jsonl"])
            try #require(r.status == 0, "\(r.stderr)")
            let summary = try #require(
                try JSONSerialization.jsonObject(with: Data((r.stdout.split(separator: "\n").last ?? "").utf8))
                    as? [String: Any])
            #expect(
                summary["accuracy"] as? Double == correct / 5 && summary["accuracy_norm"] as? Double == correctNorm / 5)
            #expect(summary["examples"] as? Int == 5)
        }
        // A label outside the endings: refused naming the line.
        try (lines[0] + "\n" + #"{"context": "a", "endings": ["b", "c"], "label": 2}"# + "\n")
            .write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
        let bad = try run([tool, "eval", "--checkpoint", dir + "/pre", "--choices", dir + "/bad.jsonl"])
        #expect(bad.status != 0 && bad.stderr.contains("bad.jsonl:2") && bad.stderr.contains("label"), "\(bad.stderr)")
    }
}
