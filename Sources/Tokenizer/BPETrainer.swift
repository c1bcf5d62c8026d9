// BPETrainer: learns a SentencePiece BPE model from text, as spm_train --model_type=bpe does, with Llama 2's
// options as defaults (split digits, byte fallback, identity normalisation, dummy prefix, whitespace kept).
//
// Steps (SentencePiece's trainer_interface.cc and bpe_model_trainer.cc):
//  1. Lines become normalised sentences, counted; meta pieces in the text are masked with a tab.
//  2. The alphabet: characters by frequency until character_coverage is reached; the rest become U+2585.
//  3. Sentences split into words at each "▁" that starts a run; each word a sequence of characters.
//  4. Merge loop: the most frequent valid pair (ties: fewer code points, then smaller bytes) becomes a piece
//     with score −(merge index), applied everywhere; exact counts, not SentencePiece's lazy approximation.
//  5. Pieces: meta pieces at their ids, merges, then the alphabet by frequency.

public struct BPETrainerOptions: Sendable {
    public var vocabSize = 32000
    public var characterCoverage: Float = 0.99995
    public var maxSentencepieceLength = 16
    public var maxSentenceLength = 4192
    public var splitDigits = true
    public var byteFallback = true
    public var allowWhitespaceOnlyPieces = true
    public var splitByUnicodeScript = true
    public var addDummyPrefix = true
    public var removeExtraWhitespaces = false
    public var userDefinedSymbols: [String] = []
    public var controlSymbols: [String] = []
    public var unkId = 0, bosId = 1, eosId = 2, padId = -1

    public init() {}
}

public enum BPETrainerError: Error, CustomStringConvertible, Equatable {
    case emptyCorpus
    case vocabularyTooSmall(requested: Int, needed: Int)
    case vocabularyTooLarge(requested: Int, possible: Int)
    case invalidOption(String)

    public var description: String {
        switch self {
        case .emptyCorpus: "the training text has no usable line"
        case let .vocabularyTooSmall(r, n): "vocab size \(r) cannot hold the \(n) meta pieces and characters; use at least \(n + 1) or lower --character-coverage"
        case let .vocabularyTooLarge(r, p): "this corpus supports at most \(p) pieces, \(r) were requested; lower --vocab-size or add text"
        case let .invalidOption(m): m
        }
    }
}

public enum BPETrainer {
    static let unkChar: UInt32 = 0x2585
    static let wsChar: UInt32 = 0x2581

    public static func train(lines: [Substring], options o: BPETrainerOptions) throws -> SentencePieceModel {
        // Meta pieces: unk, bos, eos, pad at their ids; control, user-defined and byte pieces at the lowest free ids.
        var meta: [Int: SentencePiece] = [:]
        for (id, piece, kind) in [(o.unkId, "<unk>", SentencePiece.Kind.unknown), (o.bosId, "<s>", .control),
                                  (o.eosId, "</s>", .control), (o.padId, "<pad>", .control)] where id >= 0 {
            guard meta[id] == nil else { throw BPETrainerError.invalidOption("two special pieces share id \(id)") }
            meta[id] = SentencePiece(piece, score: 0, kind: kind)
        }
        var nextFree = 0
        func addMeta(_ text: String, _ kind: SentencePiece.Kind) {
            while meta[nextFree] != nil { nextFree += 1 }
            meta[nextFree] = SentencePiece(text, score: 0, kind: kind)
        }
        for c in o.controlSymbols { addMeta(c, .control) }
        for u in o.userDefinedSymbols { addMeta(u, .userDefined) }
        if o.byteFallback { for b in 0..<256 { addMeta(String(format: "<0x%02X>", b), .byte) } }

        // 1. Sentences.
        var normalizer = NormalizerSpec()
        normalizer.name = "identity"
        normalizer.addDummyPrefix = o.addDummyPrefix
        normalizer.removeExtraWhitespaces = o.removeExtraWhitespaces
        let maskable = meta.values.map(\.bytes).sorted { $0.count > $1.count }
        var sentences: [[UInt32]: Int] = [:]
        for line in lines {
            var bytes = Array(line.utf8)
            if bytes.isEmpty || bytes.count > o.maxSentenceLength { continue }
            if String(decoding: bytes, as: UTF8.self).unicodeScalars.contains(where: { $0.value == unkChar }) { continue }
            bytes = mask(bytes, pieces: maskable)
            let normalized = Tokenizer.normalize(bytes, spec: normalizer, whitespaceAsSuffix: false)
            if normalized.isEmpty { continue }
            sentences[String(decoding: normalized, as: UTF8.self).unicodeScalars.map(\.value), default: 0] += 1
        }
        guard !sentences.isEmpty else { throw BPETrainerError.emptyCorpus }

        // 2. Alphabet by coverage.
        var charCounts: [UInt32: Int] = [:]
        var total = 0
        for (s, f) in sentences {
            for c in s where c != 0 && c != 0x20 {
                charCounts[c, default: 0] += f
                total += f
            }
        }
        let byFrequency = charCounts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var alphabet: [(UInt32, Int)] = []
        var accumulated = 0
        for (c, n) in byFrequency {
            if Float(Double(accumulated) / Double(total)) >= o.characterCoverage { break }
            accumulated += n
            alphabet.append((c, n))
        }
        let inAlphabet = Set(alphabet.map(\.0))
        let mergesWanted = o.vocabSize - meta.count - alphabet.count
        guard mergesWanted >= 0 else {
            throw BPETrainerError.vocabularyTooSmall(requested: o.vocabSize, needed: meta.count + alphabet.count)
        }

        // 3. Words.
        var words: [[UInt32]: Int] = [:]
        for (s, f) in sentences {
            let mapped = s.map { inAlphabet.contains($0) ? $0 : unkChar }
            var wordStart = 0
            var inRun = false
            for (i, c) in mapped.enumerated() {
                let isWS = c == wsChar
                if i > 0 && isWS && (!inRun || !o.allowWhitespaceOnlyPieces) {
                    words[Array(mapped[wordStart..<i]), default: 0] += f
                    wordStart = i
                }
                if isWS { inRun = true } else { inRun = false }
            }
            words[Array(mapped[wordStart...]), default: 0] += f
        }

        // 4. Merges.
        var merger = PairMerger(options: o)
        let merges = merger.run(words: words, wanted: mergesWanted)
        guard merges.count == mergesWanted || !o.hardVocabLimit else {
            throw BPETrainerError.vocabularyTooLarge(requested: o.vocabSize, possible: meta.count + alphabet.count + merges.count)
        }

        // 5. The model.
        var ordered: [SentencePiece] = []
        for (i, m) in merges.enumerated() { ordered.append(SentencePiece(bytes: m, score: -Float(i), kind: .normal)) }
        for (c, _) in alphabet {
            ordered.append(SentencePiece(String(Character(Unicode.Scalar(c)!)), score: -Float(ordered.count)))
        }
        var pieces: [SentencePiece] = []
        var next = 0
        for id in 0..<(meta.count + ordered.count) {
            if let m = meta[id] { pieces.append(m) } else { pieces.append(ordered[next]); next += 1 }
        }
        var trainer = TrainerSpec()
        trainer.modelType = .bpe
        trainer.vocabSize = pieces.count
        trainer.characterCoverage = o.characterCoverage
        trainer.maxSentenceLength = o.maxSentenceLength
        trainer.maxSentencepieceLength = o.maxSentencepieceLength
        trainer.splitDigits = o.splitDigits
        trainer.byteFallback = o.byteFallback
        trainer.allowWhitespaceOnlyPieces = o.allowWhitespaceOnlyPieces
        trainer.splitByUnicodeScript = o.splitByUnicodeScript
        trainer.controlSymbols = o.controlSymbols
        trainer.userDefinedSymbols = o.userDefinedSymbols
        (trainer.unkId, trainer.bosId, trainer.eosId, trainer.padId) = (o.unkId, o.bosId, o.eosId, o.padId)
        return SentencePieceModel(pieces: pieces, trainer: trainer, normalizer: normalizer)
    }

    /// Replaces each occurrence of a meta piece in the text with a tab, so none is learnt as ordinary text.
    static func mask(_ bytes: [UInt8], pieces: [[UInt8]]) -> [UInt8] {
        guard bytes.contains(where: { $0 == UInt8(ascii: "<") }) || pieces.contains(where: { $0.first != UInt8(ascii: "<") }) else {
            return bytes
        }
        var out: [UInt8] = []
        var i = 0
        outer: while i < bytes.count {
            for p in pieces where p.count <= bytes.count - i && bytes[i..<(i + p.count)].elementsEqual(p) {
                out.append(0x09)
                i += p.count
                continue outer
            }
            out.append(bytes[i])
            i += 1
        }
        return out
    }
}

extension BPETrainerOptions {
    /// SentencePiece refuses to write a model short of vocab_size pieces unless hard_vocab_limit is off.
    var hardVocabLimit: Bool { true }
}
