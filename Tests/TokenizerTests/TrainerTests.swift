// The BPE trainer against spm_train: on the same corpus and vocabulary size the learnt pieces should mostly
// coincide (≥ 90%) and encode the corpus into at most 3% more tokens; the model we write must load in the
// sentencepiece library and encode held-out text to the ids we give.
import Foundation
import TestSupport
import Testing
import Tokenizer

let fortuneDirectory = "/usr/share/games/fortunes"

/// English text from Debian's fortunes package (installed by `make test`), split into training and held-out files.
func fortuneFiles() throws -> (train: [String], heldOut: String) {
    let names = try FileManager.default.contentsOfDirectory(atPath: fortuneDirectory)
        .filter { !$0.hasSuffix(".dat") && !$0.hasSuffix(".u8") }.sorted()
    let files = names.map { fortuneDirectory + "/" + $0 }
    let heldOut = files.first { $0.hasSuffix("/wisdom") } ?? files.last!
    return (Array(files.filter { $0 != heldOut }.prefix(12)), heldOut)
}

func runPython(_ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3"] + arguments
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

func lines(ofFiles files: [String]) throws -> [Substring] {
    try files.flatMap { try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n") }
}

@Suite struct TrainerTests {
    @Test func vocabularyAndTokenCountMatchSentencePiece() throws {
        try #require(
            FileManager.default.fileExists(atPath: fortuneDirectory),
            "the fortunes package is needed (make test installs it)")
        let (train, heldOut) = try fortuneFiles()
        var options = BPETrainerOptions()
        options.vocabSize = 2000
        let ours = try Tokenizer(model: BPETrainer.train(lines: try lines(ofFiles: train), options: options))

        let dir = NSTemporaryDirectory() + "spm-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let status = try runPython(
            [root.appendingPathComponent("scripts/spm_train_reference.py").path, dir + "/spm", "2000"] + train)
        try #require(status == 0, "python3 with sentencepiece is needed (make test installs it)")
        let theirs = try Tokenizer(path: dir + "/spm.model")

        let ourPieces = Set(ours.model.pieces.map(\.bytes)), theirPieces = Set(theirs.model.pieces.map(\.bytes))
        let overlap = Double(ourPieces.intersection(theirPieces).count) / Double(theirPieces.count)
        let corpus = try lines(ofFiles: train).map(String.init)
        let ourTokens = corpus.reduce(0) { $0 + ours.encode($1).count }
        let theirTokens = corpus.reduce(0) { $0 + theirs.encode($1).count }
        print(
            "trainer vs spm_train, vocab 2000: piece overlap \(overlap), tokens ours/theirs \(Double(ourTokens) / Double(theirTokens))"
        )
        #expect(overlap >= 0.9)
        #expect(Double(ourTokens) <= 1.03 * Double(theirTokens))

        // Our model, written out, loads in the library and encodes held-out text exactly as we do.
        let path = dir + "/ours.model"
        try Data(ours.model.serialized()).write(to: URL(fileURLWithPath: path))
        let held = try String(contentsOfFile: heldOut, encoding: .utf8).split(separator: "\n").prefix(400).map(
            String.init)
        let reference = try #require(try libraryReference(model: path, texts: held))
        for (text, expected) in zip(held, reference) {
            #expect(ours.encode(text) == expected.ids, "\(text.debugDescription)")
        }
        #expect(try Tokenizer(path: path).model.pieces == ours.model.pieces, "the file reads back as written")
    }

    @Test func metaPiecesComeFirstAndUserDefinedPiecesStayWhole() throws {
        var options = BPETrainerOptions()
        options.vocabSize = 300
        options.userDefinedSymbols = ["<sep>"]
        let text: [Substring] = [
            "low lower lowest", "new newer newest 2024", "wide wider widest", "  indented\tline",
            "question <sep> answer",
        ]
        let model = try BPETrainer.train(lines: text, options: options)
        let t = try Tokenizer(model: model)
        #expect(model.pieces.count == 300)
        #expect(model.pieces[0].kind == .unknown && model.pieces[1].text == "<s>" && model.pieces[2].text == "</s>")
        #expect(model.pieces[3].text == "<sep>" && model.pieces[3].kind == .userDefined)
        #expect(model.pieces[4].text == "<0x00>" && model.pieces[259].text == "<0xFF>")
        // Digits are never merged; the separator is one id wherever it appears.
        #expect(!model.pieces.contains { $0.kind == .normal && $0.text.count > 1 && $0.text.contains { $0.isNumber } })
        #expect(t.encode("a<sep>b").contains(3))
        #expect(try t.decode(t.encode("new <sep> 2024")) == "new <sep> 2024")
    }

    @Test func tooLargeVocabularyIsAClearError() throws {
        var options = BPETrainerOptions()
        options.vocabSize = 5000
        #expect(throws: BPETrainerError.self) { try BPETrainer.train(lines: ["tiny corpus"], options: options) }
        #expect(throws: BPETrainerError.emptyCorpus) { try BPETrainer.train(lines: [], options: options) }
    }
}
