// The declaration machinery on a toy block that knows no model: defaults from the declarations, decode and
// encode (omitted-at-default and absent keys), refusals that name `section.key`, range checks, command-line
// values, help notes and the Markdown table.
import Foundation
import Support
import Testing

struct Toy: Codable, Equatable, Sendable {
    enum Mode: String, Codable, CaseIterable, Sendable, SettingChoice { case fast, careful }

    var count: Int = Self.declared(\.count)
    var rate: Double = Self.declared(\.rate)
    var mode: Mode = Self.declared(\.mode)
    var wire: Mode = Self.declared(\.wire)
    var path: String? = Self.declared(\.path)
    var name: String
    var loud: Bool = Self.declared(\.loud)

    init(name: String) { self.name = name }

    init(from decoder: Decoder) throws {
        self.init(name: "")
        try Self.settings.decode(&self, from: decoder)
    }

    func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }

    static func declared<V>(_ keyPath: KeyPath<Toy, V>) -> V { settings.defaultValue(keyPath) }

    static let settings = SettingsBlock<Toy>(
        "toy",
        [
            Setting(
                \.count, "count", 3, because: "three is enough", .int(min: 1, max: 10), flag: "count",
                help: "how many"),
            Setting(
                \.rate, "rate", 0.5, because: "half", .number(min: 0, inclusive: false, max: 1, maxInclusive: false),
                flag: "rate", help: "how fast"),
            Setting(\.mode, "mode", .fast, because: "most runs", flag: "mode", help: "the mode"),
            Setting(\.wire, "wire", .fast, because: "older files lack it", encoding: .unlessDefault, help: "the wire"),
            Setting(\.path, "path", nil, because: "nothing written", flag: "path", placeholder: "FILE", help: "where"),
            Setting(required: \.name, "name", help: "what it is called"),
            Setting(\.loud, "loud", false, because: "quiet by default", flag: "loud", help: "say more"),
        ])
}

@Suite struct SettingsMachineryTests {
    func decode(_ json: String) throws -> Toy { try JSONDecoder().decode(Toy.self, from: Data(json.utf8)) }

    func encoded(_ toy: Toy) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(toy), as: UTF8.self)
    }

    @Test func defaultsComeFromTheDeclarations() {
        let toy = Toy(name: "t")
        #expect(toy.count == 3 && toy.rate == 0.5 && toy.mode == .fast && toy.path == nil && !toy.loud)
        #expect(Toy.settings.names == ["count", "rate", "mode", "wire", "path", "name", "loud"])
    }

    /// Absent optionals and a value at an omit-at-default key are left out; everything else round-trips.
    @Test func encodeDecodeRoundTrip() throws {
        var toy = Toy(name: "t")
        #expect(try encoded(toy) == #"{"count":3,"loud":false,"mode":"fast","name":"t","rate":0.5}"#)
        (toy.count, toy.rate, toy.mode, toy.wire, toy.path, toy.loud) = (7, 0.25, .careful, .careful, "p", true)
        #expect(
            try encoded(toy)
                == #"{"count":7,"loud":true,"mode":"careful","name":"t","path":"p","rate":0.25,"wire":"careful"}"#)
        #expect(try decode(encoded(toy)) == toy)
        #expect(try decode(#"{"name": "t"}"#) == Toy(name: "t"))
    }

    /// Decoding refuses by `section.key` inside a containing object: a missing required key, a word the enum
    /// lacks; the known-key check lists every key.
    @Test func refusalsNameTheKey() throws {
        struct Outer: Decodable { let toy: Toy }
        func refusal(_ json: String) -> ConfigError? {
            do {
                _ = try JSONDecoder().decode(Outer.self, from: Data(json.utf8))
                return nil
            } catch { return error as? ConfigError }
        }
        #expect(refusal(#"{"toy": {"count": 2}}"#) == ConfigError(field: "toy.name", message: "is required"))
        #expect(
            refusal(#"{"toy": {"name": "t", "mode": "reckless"}}"#)
                == ConfigError(field: "toy.mode", message: "is 'reckless'; use fast or careful"))
        #expect(
            throws: ConfigError(
                file: "f.json", field: "toy.cuont",
                message: "unknown key; known keys: count, loud, mode, name, path, rate, wire")
        ) {
            try Toy.settings.checkKnown(["count", "cuont"], file: "f.json")
        }
        try Toy.settings.checkKnown(["count", "name"])
    }

    @Test func rangesAreCheckedByName() throws {
        var toy = Toy(name: "t")
        try Toy.settings.checkRanges(toy)
        toy.count = 11
        #expect(throws: ConfigError(field: "toy.count", message: "must be an integer in 1...10, got 11 (default 3)")) {
            try Toy.settings.checkRanges(toy)
        }
        toy.count = 10
        toy.rate = 1
        #expect(throws: ConfigError(field: "toy.rate", message: "must be a number > 0 and < 1, got 1 (default 0.5)")) {
            try Toy.settings.checkRanges(toy)
        }
        toy.rate = .nan
        #expect(throws: ConfigError.self) { try Toy.settings.checkRanges(toy) }
    }

    /// A command-line value goes through the same kind: in range it is written, outside it is refused.
    @Test func commandLineValues() {
        var toy = Toy(name: "t")
        let count = Toy.settings.setting(\.count)
        #expect(count.apply(argument: "9", to: &toy) && toy.count == 9)
        #expect(!count.apply(argument: "0", to: &toy) && !count.apply(argument: "x", to: &toy) && toy.count == 9)
        #expect(Toy.settings.setting(\.path).apply(argument: "out.txt", to: &toy) && toy.path == "out.txt")
        #expect(Toy.settings["mode"].apply(argument: "careful", to: &toy) && toy.mode == .careful)
        Toy.settings.setDefaults(&toy)
        #expect(toy == Toy(name: "t"))
        #expect(Toy.settings.flagged.map(\.flag) == ["count", "rate", "mode", "path", "loud"])
    }

    /// Help shows what a flag accepts and the declared default; an absent default shows what absence means; a
    /// switch shows neither.
    @Test func kindsSayWhatTheyAccept() {
        #expect(ValueKind.int(min: 1, max: 10).accepts == "an integer in 1...10")
        #expect(ValueKind.int(min: 0, max: Int.max).accepts == "an integer ≥ 0")
        #expect(Int.kind.accepts == "an integer" && Double.kind.accepts == "a number")
        #expect(
            ValueKind.number(min: 0, inclusive: true, max: 1, maxInclusive: false).accepts
                == "a number ≥ 0 and < 1")
        #expect(ValueKind.number(min: 0, inclusive: false, max: .infinity).accepts == "a number > 0")
        #expect(ValueKind.choice(["a", "b", "c"]).accepts == "a, b or c")
        #expect(
            ValueKind.number(min: 0, inclusive: false, max: 1).admits(argument: "1")
                && !ValueKind.number(min: 0, inclusive: false, max: 1).admits(argument: "nan"))
    }

    @Test func helpNotesAndTable() {
        #expect(Toy.settings["count"].helpNote == " (an integer in 1...10; default 3)")
        #expect(Toy.settings["rate"].helpNote == " (a number > 0 and < 1; default 0.5)")
        #expect(Toy.settings["mode"].helpNote == " (fast or careful; default fast)")
        #expect(Toy.settings["path"].helpNote == " (default: nothing written)")
        #expect(Toy.settings["loud"].helpNote == "")
        let table = Toy.settings.markdownTable().components(separatedBy: "\n")
        #expect(table.count == 2 + Toy.settings.names.count)
        #expect(table[2] == "| `count` | how many | `3`: three is enough | an integer in 1...10 | `--count` |")
        #expect(table[6] == "| `path` | where | absent: nothing written | `FILE` | `--path` |")
        #expect(table[7] == "| `name` | what it is called | required | `VALUE` |  |")
    }
}
