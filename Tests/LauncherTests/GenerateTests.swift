// `llama-train generate --prompts`: the samples file is the same bytes on 1, 2 and 3 ranks and at batch 1 and
// 16 (prompts split over ranks, streams seeded per sample, decoding batch-invariant); its lines say what the
// README says; bad prompt lines are refused naming file and line.
import Foundation
import Testing

@Suite(.serialized) struct GenerateTests {
    @Test func samplesDoNotDependOnRanksOrBatch() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        let prompts = [
            #"{"prompt": "the river"}"#, #"{"prompt": "a"}"#, #"{"prompt": "Repeat the word river please, and then"}"#,
            #"{"prompt": "numbers 12 and"}"#, #"{"prompt": ""}"#,
        ]
        try (prompts.joined(separator: "\n") + "\n").write(
            toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        func generate(ranks: Int, batch: Int, out: String, prompts: String = "prompts.jsonl") throws -> String {
            let launcher = ranks == 1 ? [] : mpirunFast + ["-np", "\(ranks)"]
            let r = try run(
                launcher + [
                    tool, "generate", "--checkpoint", dir + "/pre", "--prompts", dir + "/" + prompts, "--out",
                    dir + "/" + out, "--samples", "3", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95",
                    "--max-tokens", "12", "--logprobs", "--batch", "\(batch)", "--seed", "4",
                ])
            #expect(r.status == 0, "\(ranks) ranks, batch \(batch): \(r.stderr)")
            return try String(contentsOfFile: dir + "/" + out, encoding: .utf8)
        }
        let reference = try generate(ranks: 1, batch: 16, out: "one.jsonl")
        let lines = reference.split(separator: "\n").map {
            try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(lines.count == prompts.count * 3)
        for (i, line) in lines.enumerated() {
            #expect(line["prompt_index"] as? Int == i / 3 && line["sample_index"] as? Int == i % 3)
            let ids = line["ids"] as? [Int] ?? [], tokens = line["token_logprobs"] as? [Double] ?? []
            let drawn = line["token_sampling_logprobs"] as? [Double] ?? []
            #expect(!ids.isEmpty && ids.count == tokens.count && ids.count == drawn.count)
            #expect(abs((line["logprob"] as? Double ?? 1) - tokens.reduce(0, +)) < 1e-9)
            // Truncation only raises a token's probability: the drawn distribution's log-prob is at least the full one's.
            #expect(zip(drawn, tokens).allSatisfy { $0 >= $1 - 1e-9 && $0 <= 0 })
            #expect(["eos", "stop", "length", "context"].contains(line["finish_reason"] as? String ?? ""))
        }
        #expect(Set(lines.map { $0["ids"] as? [Int] ?? [] }).count > prompts.count, "samples of a prompt differ")
        for (ranks, batch) in [(2, 16), (3, 16), (1, 1), (2, 3)] {
            let other = try generate(ranks: ranks, batch: batch, out: "r\(ranks)-b\(batch).jsonl")
            #expect(other == reference, "\(ranks) ranks at batch \(batch) wrote other samples")
        }
        // The same prompts as Parquet (every reader of prompt files takes it): the same samples.
        let convert = try run([
            "python3", packageRoot + "/scripts/jsonl-to-parquet.py", dir + "/prompts.jsonl", dir + "/prompts.parquet",
            "2",
        ])
        try #require(convert.status == 0, "\(convert.stderr)")
        #expect(try generate(ranks: 2, batch: 16, out: "parquet.jsonl", prompts: "prompts.parquet") == reference)
    }

    /// `score` on 1 and 2 ranks writes the same lines; each completion's tokens are scored, and the sum is theirs.
    @Test func scoreIsTheSameOnTwoRanks() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        try """
        {"prompt": "the river", "completion": " flows to the sea"}
        {"prompt": "numbers", "completion": " 12 and 345"}
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
        """.write(toFile: dir + "/pairs.jsonl", atomically: true, encoding: .utf8)
        func score(_ launcher: [String], _ out: String) throws -> String {
            let r = try run(
                launcher + [
                    tool, "score", "--checkpoint", dir + "/pre", "--data", dir + "/pairs.jsonl", "--out",
                    dir + "/" + out, "--template", "separator",
                ])
            #expect(r.status == 0, "\(r.stderr)")
            return try String(contentsOfFile: dir + "/" + out, encoding: .utf8)
        }
        let one = try score([], "one.jsonl"), two = try score(mpirunFast + ["-np", "2"], "two.jsonl")
        #expect(one == two)
        let lines = one.split(separator: "\n").map {
            try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(lines.count == 3)
        for line in lines {
            let tokens = line["token_logprobs"] as? [Double] ?? []
            #expect(!tokens.isEmpty && tokens.count == line["tokens"] as? Int && tokens.allSatisfy { $0 < 0 })
            #expect(abs((line["logprob"] as? Double ?? 1) - tokens.reduce(0, +)) < 1e-9)
        }
    }

    @Test func badPromptLinesAreRefused() throws {
        let tool = try toolPath()
        let dir = try fineTuneWorkspace()
        for (name, text, expected) in [
            ("notjson", "{\"prompt\": \"a\"}\nnot json\n", "bad.jsonl:2"),
            ("nofield", "{\"text\": \"a\"}\n", "needs {\"prompt\": TEXT}"),
            ("messages", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", "needs --template"),
        ] {
            try text.write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
            let r = try run([
                tool, "generate", "--checkpoint", dir + "/pre", "--prompts", dir + "/bad.jsonl", "--out",
                dir + "/out-\(name).jsonl",
            ])
            #expect(r.status != 0 && r.stderr.contains(expected), "\(name): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/out-\(name).jsonl"))
        }
    }
}
