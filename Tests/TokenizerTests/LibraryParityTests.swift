// Parity with the sentencepiece library itself (Python package, installed by `make test`) on random awkward
// strings, the round-trip property, Llama 2's own ids where its tokenizer.model is at hand, and a fuzzed
// model decoder.
import Foundation
import TestSupport
import Testing
import Tokenizer

/// Random strings from the pieces that trip tokenizers: spaces in runs, tabs, newlines, CR, digits, "▁",
/// combining marks, CJK, emoji, NUL, look-alike control tokens, accented letters in both forms.
func awkwardStrings(count: Int, seed: UInt64) -> [String] {
    let atoms = [
        " ", "  ", "\t", "\n", "\r\n", "a", "the", "The", "hello", "world", "ing", "0", "1", "42", "3.14",
        "▁", "e\u{301}", "\u{E9}", "日本", "語", "の", "🦙", "👍🏽", "\u{0}", "<s>", "</s>", "<0x41>", ".", ",",
        "'", "\"", "-", "Ω", "ß", "\u{3000}", "\u{A0}", "x", "Q", "zz", "ﬁ", "\u{1F77}", "\u{3AF}",
    ]
    var r = Rand(seed)
    return (0..<count).map { _ in
        (0..<Int(r.next() % 12)).map { _ in atoms[Int(r.next() % UInt64(atoms.count))] }.joined()
    }
}

/// Runs scripts/spm_reference.py; nil when python3 or the sentencepiece package is unavailable.
func libraryReference(model: String, texts: [String]) throws -> [(ids: [Int32], decoded: String)]? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", root.appendingPathComponent("scripts/spm_reference.py").path, model]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let lines = try texts.map {
        String(decoding: try JSONSerialization.data(withJSONObject: ["text": $0]), as: UTF8.self)
    }
    input.fileHandleForWriting.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { return nil }
    return try String(decoding: data, as: UTF8.self).split(separator: "\n").map {
        let o = try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        return ((o["ids"] as! [NSNumber]).map { Int32($0.intValue) }, o["decoded"] as! String)
    }
}

@Suite struct LibraryParityTests {
    @Test func randomStringsMatchTheLibrary() throws {
        let model = FixtureTests.tokenizerPath
        let tokenizer = try Tokenizer(path: model)
        let texts = awkwardStrings(count: 400, seed: 21)
        let reference = try #require(
            try libraryReference(model: model, texts: texts),
            "python3 with sentencepiece is needed (make test installs it)")
        for (text, expected) in zip(texts, reference) {
            let ids = tokenizer.encode(text)
            #expect(ids == expected.ids, "encode(\(text.debugDescription))")
            #expect(try tokenizer.decode(ids) == expected.decoded, "decode(encode(\(text.debugDescription)))")
        }
    }

    /// decode(encode(s)) == s for every s without U+2581: SentencePiece writes spaces as "▁", so a literal
    /// "▁" in the input comes back as a space (the library does the same; see the parity test above).
    @Test func decodeInvertsEncode() throws {
        let tokenizer = try Tokenizer(path: FixtureTests.tokenizerPath)
        var r = Rand(5)
        for text in awkwardStrings(count: 300, seed: 99).map({ $0.replacingOccurrences(of: "▁", with: "_") }) {
            #expect(try tokenizer.decode(tokenizer.encode(text)) == text, "\(text.debugDescription)")
        }
        // Arbitrary scalars, surrogates excluded, well beyond the atoms.
        for _ in 0..<300 {
            let scalars = (0..<Int(r.next() % 10)).compactMap { _ in Unicode.Scalar(UInt32(r.next() % 0x2FFFF)) }
                .filter { $0 != "▁" }
            let text = String(String.UnicodeScalarView(scalars))
            #expect(try tokenizer.decode(tokenizer.encode(text)) == text, "\(text.unicodeScalars.map { $0.value })")
        }
    }

    @Test func outOfRangeIdIsAnError() throws {
        let tokenizer = try Tokenizer(path: FixtureTests.tokenizerPath)
        #expect(throws: TokenizerError.idOutOfRange(id: 2000, vocabSize: 2000)) { try tokenizer.decode([5, 2000]) }
        #expect(throws: TokenizerError.self) { try tokenizer.decode([-1]) }
    }

    /// Random and mutated bytes never crash the model reader: they load or throw.
    @Test func fuzzedModelFilesFailCleanly() throws {
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: FixtureTests.tokenizerPath)))
        var r = Rand(77)
        var rejected = 0
        for trial in 0..<400 {
            var bytes: [UInt8]
            if trial < 100 {
                bytes = (0..<Int(r.next() % 300)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            } else {
                bytes = good
                for _ in 0..<(1 + Int(r.next() % 8)) {
                    bytes[Int(r.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: r.next())
                }
                if trial % 3 == 0 { bytes = Array(bytes.prefix(Int(r.next() % UInt64(bytes.count)))) }
            }
            do {
                let model = try SentencePieceModel(serialized: bytes)
                _ = try Tokenizer(model: model, source: "fuzz-\(trial)").encode("fuzz 123 テスト")
            } catch {
                rejected += 1
            }
        }
        #expect(rejected > 100, "random bytes should mostly be rejected")
    }

    /// Llama 2's tokenizer (set LLAMA_TOKENIZER to its tokenizer.model; a public copy is in karpathy/llama2.c).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["LLAMA_TOKENIZER"] != nil))
    func llama2ReferenceIds() throws {
        let t = try Tokenizer(path: ProcessInfo.processInfo.environment["LLAMA_TOKENIZER"]!)
        let cases: [(String, [Int32])] = [
            ("", []), (" ", [259]), ("   ", [268]), ("Hello", [15043]), (" Hello", [29871, 15043]),
            ("Hello ", [15043, 29871]), ("Hello  world", [15043, 29871, 3186]), ("a   b", [263, 259, 289]),
            ("Hello\tworld", [15043, 12, 11526]), ("line1\nline2", [1196, 29896, 13, 1220, 29906]),
            ("\r\n", [6756, 13]),
            ("3.14159", [29871, 29941, 29889, 29896, 29946, 29896, 29945, 29929]),
            (" this is 🦙.cpp", [29871, 445, 338, 29871, 243, 162, 169, 156, 29889, 8223]),
            ("日本語のテキスト", [29871, 30325, 30346, 30968, 30199, 30572, 30454, 30255, 30279]),
            ("e\u{301}", [321, 30103]), ("\u{E9}", [904]), ("a▁b", [263, 289]), ("<s>", [529, 29879, 29958]),
            ("\u{0}", [29871, 3]),
        ]
        for (text, ids) in cases { #expect(t.encode(text) == ids, "\(text.debugDescription)") }
        let decodes: [([Int32], String)] = [
            ([1, 29871, 15043], " Hello"), ([15043, 15043], "Hello Hello"), ([29871], ""), ([13, 15043], "\n Hello"),
            ([0], " \u{2047} "), ([231, 187], "\u{FFFD}\u{FFFD}"), ([231, 187, 176], "中"),
        ]
        for (ids, text) in decodes { #expect(try t.decode(ids) == text, "decode \(ids)") }
        if let reference = try libraryReference(
            model: ProcessInfo.processInfo.environment["LLAMA_TOKENIZER"]!,
            texts: awkwardStrings(count: 300, seed: 3))
        {
            for (text, expected) in zip(awkwardStrings(count: 300, seed: 3), reference) {
                #expect(t.encode(text) == expected.ids, "\(text.debugDescription)")
            }
        }
    }
}
