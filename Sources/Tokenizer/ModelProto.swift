// SentencePiece's ModelProto (sentencepiece_model.proto): the pieces with scores and types, and the trainer
// and normaliser settings that change encoding. Decoded and encoded by hand (Protobuf.swift); fields we do
// not use are skipped on read and left at their defaults on write.

public struct TrainerSpec: Equatable, Sendable {
    public enum ModelType: Int, Sendable { case unigram = 1, bpe = 2, word = 3, char = 4 }

    // Defaults are proto2's, from sentencepiece_model.proto.
    public var modelType: ModelType = .unigram
    public var vocabSize = 8000
    public var characterCoverage: Float = 0.9995
    public var maxSentenceLength = 4192
    public var maxSentencepieceLength = 16
    public var splitByUnicodeScript = true
    public var splitByWhitespace = true
    public var splitByNumber = true
    public var treatWhitespaceAsSuffix = false
    public var splitDigits = false
    public var allowWhitespaceOnlyPieces = false
    public var controlSymbols: [String] = []
    public var userDefinedSymbols: [String] = []
    public var hardVocabLimit = true
    public var byteFallback = false
    public var unkId = 0, bosId = 1, eosId = 2, padId = -1
    public var unkSurface = " \u{2047} "
    public var unkPiece = "<unk>", bosPiece = "<s>", eosPiece = "</s>", padPiece = "<pad>"

    public init() {}
}

public struct NormalizerSpec: Equatable, Sendable {
    public var name = ""
    public var precompiledCharsmap: [UInt8] = []
    public var addDummyPrefix = true
    public var removeExtraWhitespaces = true
    public var escapeWhitespaces = true

    public init() {}
}

public struct SentencePiece: Equatable, Sendable {
    public enum Kind: Int, Sendable { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }
    /// UTF-8 bytes: pieces are compared as bytes, never as Swift Strings (canonical equivalence would
    /// merge pieces that differ only in normalisation form).
    public var bytes: [UInt8]
    public var score: Float
    public var kind: Kind

    public init(_ text: String, score: Float, kind: Kind = .normal) {
        bytes = Array(text.utf8)
        self.score = score
        self.kind = kind
    }

    public init(bytes: [UInt8], score: Float, kind: Kind) {
        self.bytes = bytes
        self.score = score
        self.kind = kind
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

public struct SentencePieceModel: Equatable, Sendable {
    public var pieces: [SentencePiece] = []
    public var trainer = TrainerSpec()
    public var normalizer = NormalizerSpec()

    public init(pieces: [SentencePiece], trainer: TrainerSpec, normalizer: NormalizerSpec) {
        self.pieces = pieces
        self.trainer = trainer
        self.normalizer = normalizer
    }

    // MARK: - Reading

    public init(serialized bytes: [UInt8]) throws {
        var r = ProtoReader(bytes)
        while !r.atEnd {
            let (field, wire) = try r.tag()
            switch field {
            case 1:
                try r.expect(wire, .lengthDelimited, field: field)
                pieces.append(try Self.readPiece(bytes, try r.lengthDelimited()))
            case 2:
                try r.expect(wire, .lengthDelimited, field: field)
                trainer = try Self.readTrainer(bytes, try r.lengthDelimited())
            case 3:
                try r.expect(wire, .lengthDelimited, field: field)
                normalizer = try Self.readNormalizer(bytes, try r.lengthDelimited())
            default:
                try r.skip(wire)
            }
        }
    }

    private static func readPiece(_ bytes: [UInt8], _ range: Range<Int>) throws -> SentencePiece {
        var r = ProtoReader(bytes, range: range)
        var piece = SentencePiece(bytes: [], score: 0, kind: .normal)
        while !r.atEnd {
            let (field, wire) = try r.tag()
            switch (field, wire) {
            case (1, .lengthDelimited): piece.bytes = Array(bytes[try r.lengthDelimited()])
            case (2, .fixed32): piece.score = try r.float()
            case (3, .varint):
                let raw = try r.varint()
                guard let kind = SentencePiece.Kind(rawValue: Int(truncatingIfNeeded: raw)) else {
                    throw ProtobufError(offset: r.position, message: "unknown piece type \(raw)")
                }
                piece.kind = kind
            case (1...3, _):
                throw ProtobufError(offset: r.position, message: "piece field \(field) has the wrong wire type")
            default: try r.skip(wire)
            }
        }
        return piece
    }

    private static func readTrainer(_ bytes: [UInt8], _ range: Range<Int>) throws -> TrainerSpec {
        var r = ProtoReader(bytes, range: range)
        var t = TrainerSpec()
        while !r.atEnd {
            let (field, wire) = try r.tag()
            if wire == .lengthDelimited, [30, 31, 44, 45, 46, 47, 48].contains(field) {
                let text = String(decoding: bytes[try r.lengthDelimited()], as: UTF8.self)
                switch field {
                case 30: t.controlSymbols.append(text)
                case 31: t.userDefinedSymbols.append(text)
                case 44: t.unkSurface = text
                case 45: t.unkPiece = text
                case 46: t.bosPiece = text
                case 47: t.eosPiece = text
                default: t.padPiece = text
                }
            } else if wire == .fixed32, field == 10 {
                t.characterCoverage = try r.float()
            } else if wire == .varint {
                // int32 fields arrive as 64-bit varints; negative ids (pad_id = -1) as ten bytes.
                let value = Int(Int32(truncatingIfNeeded: try r.varint()))
                switch field {
                case 3:
                    guard let type = TrainerSpec.ModelType(rawValue: value) else {
                        throw ProtobufError(offset: r.position, message: "unknown model_type \(value)")
                    }
                    t.modelType = type
                case 4: t.vocabSize = value
                case 18: t.maxSentenceLength = value
                case 20: t.maxSentencepieceLength = value
                case 21: t.splitByUnicodeScript = value != 0
                case 22: t.splitByWhitespace = value != 0
                case 23: t.splitByNumber = value != 0
                case 24: t.treatWhitespaceAsSuffix = value != 0
                case 25: t.splitDigits = value != 0
                case 26: t.allowWhitespaceOnlyPieces = value != 0
                case 33: t.hardVocabLimit = value != 0
                case 35: t.byteFallback = value != 0
                case 40: t.unkId = value
                case 41: t.bosId = value
                case 42: t.eosId = value
                case 43: t.padId = value
                default: break
                }
            } else {
                try r.skip(wire)
            }
        }
        return t
    }

    private static func readNormalizer(_ bytes: [UInt8], _ range: Range<Int>) throws -> NormalizerSpec {
        var r = ProtoReader(bytes, range: range)
        var n = NormalizerSpec()
        while !r.atEnd {
            let (field, wire) = try r.tag()
            switch (field, wire) {
            case (1, .lengthDelimited): n.name = String(decoding: bytes[try r.lengthDelimited()], as: UTF8.self)
            case (2, .lengthDelimited): n.precompiledCharsmap = Array(bytes[try r.lengthDelimited()])
            case (3, .varint): n.addDummyPrefix = try r.varint() != 0
            case (4, .varint): n.removeExtraWhitespaces = try r.varint() != 0
            case (5, .varint): n.escapeWhitespaces = try r.varint() != 0
            default: try r.skip(wire)
            }
        }
        return n
    }

    // MARK: - Writing

    public func serialized() -> [UInt8] {
        var w = ProtoWriter()
        for p in pieces {
            var pw = ProtoWriter()
            pw.bytes(1, p.bytes)
            pw.float(2, p.score)
            if p.kind != .normal { pw.int(3, p.kind.rawValue) }
            w.bytes(1, pw.bytes)
        }
        var t = ProtoWriter()
        let s = trainer
        t.int(3, s.modelType.rawValue)
        t.int(4, s.vocabSize)
        t.float(10, s.characterCoverage)
        t.int(18, s.maxSentenceLength)
        t.int(20, s.maxSentencepieceLength)
        t.bool(21, s.splitByUnicodeScript)
        t.bool(22, s.splitByWhitespace)
        t.bool(23, s.splitByNumber)
        t.bool(24, s.treatWhitespaceAsSuffix)
        t.bool(25, s.splitDigits)
        t.bool(26, s.allowWhitespaceOnlyPieces)
        for c in s.controlSymbols { t.string(30, c) }
        for u in s.userDefinedSymbols { t.string(31, u) }
        t.bool(33, s.hardVocabLimit)
        t.bool(35, s.byteFallback)
        t.int(40, s.unkId)
        t.int(41, s.bosId)
        t.int(42, s.eosId)
        t.int(43, s.padId)
        t.string(44, s.unkSurface)
        t.string(45, s.unkPiece)
        t.string(46, s.bosPiece)
        t.string(47, s.eosPiece)
        t.string(48, s.padPiece)
        w.bytes(2, t.bytes)
        var n = ProtoWriter()
        n.string(1, normalizer.name)
        if !normalizer.precompiledCharsmap.isEmpty { n.bytes(2, normalizer.precompiledCharsmap) }
        n.bool(3, normalizer.addDummyPrefix)
        n.bool(4, normalizer.removeExtraWhitespaces)
        n.bool(5, normalizer.escapeWhitespaces)
        w.bytes(3, n.bytes)
        return w.bytes
    }
}
