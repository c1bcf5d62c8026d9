// Outputs that would destroy inputs are refused before any work, naming both flags, and the input is left as
// it was: the same file, a file the output directory would replace, and the same through a symlink.
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct OutputClashTests {
    func expectRefusedKeeping(_ r: Run, _ flags: [String], _ file: String, _ before: Data?, _ what: String) {
        #expect(r.status == 1 && flags.allSatisfy { r.stderr.contains($0) }, "\(what): \(r.stderr)")
        #expect(before != nil && FileManager.default.contents(atPath: file) == before, "\(what): \(file) changed")
    }

    @Test func outputsNeverOverwriteInputs() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeTinyConfig(dir)
        let kept = FileManager.default.contents(atPath: config)
        // --out is the config's directory: its config.json would replace... the run's own config, named so.
        try FileManager.default.copyItem(atPath: config, toPath: dir + "/config.json")
        let asExport = dir + "/config.json", exportBytes = FileManager.default.contents(atPath: asExport)
        let out = try run([tool, "pretrain", "--config", asExport, "--out", dir])
        expectRefusedKeeping(out, ["--out", "--config"], asExport, exportBytes, "--out beside --config")
        // The same through a symlink to the directory.
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir)
        let linked = try run([tool, "pretrain", "--config", asExport, "--out", dir + "/link"])
        expectRefusedKeeping(linked, ["--out", "--config"], asExport, exportBytes, "--out through a symlink")
        // --metrics naming an input (the config itself, through `..` and through a symlink).
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        let metrics = try run([tool, "pretrain", "--config", config, "--metrics", dir + "/sub/../tiny.json"])
        expectRefusedKeeping(metrics, ["--metrics", "--config"], config, kept, "--metrics on the config")
        let viaLink = try run([tool, "pretrain", "--config", config, "--metrics", dir + "/link/tiny.json"])
        expectRefusedKeeping(viaLink, ["--metrics", "--config"], config, kept, "--metrics through a symlink")
        // tokenizer train --out naming its own input; plot --out naming its metrics.
        let corpus = dir + "/corpus.txt"
        try String(repeating: "the cat sat on the mat\n", count: 50).write(
            toFile: corpus, atomically: true, encoding: .utf8)
        let text = FileManager.default.contents(atPath: corpus)
        let train = try run([tool, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", corpus])
        expectRefusedKeeping(train, ["--out", "--input"], corpus, text, "tokenizer train")
        let plot = try run([tool, "plot", "--metrics", corpus, "--out", corpus])
        expectRefusedKeeping(plot, ["--out", "--metrics"], corpus, text, "plot")
        // Apart, the same run goes through.
        #expect(try run([tool, "pretrain", "--config", config, "--out", dir + "/model"]).status == 0)
    }
}
