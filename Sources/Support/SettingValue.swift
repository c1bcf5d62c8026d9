// The types a declared setting may hold (Settings.swift): how each reads from JSON and from a command-line
// argument, writes to JSON, shows itself in help and errors, and meets a ValueKind's range. Integers, numbers,
// text, switches, optionals of those, string-to-number maps, and enums of words (SettingChoice).
//
// What this is not: the declarations themselves, or any knowledge of which keys exist.

public protocol SettingValue: Codable, Equatable, Sendable {
    /// What a declaration of this type accepts when it names no range or choices.
    static var kind: ValueKind { get }
    /// Parses a command-line value; nil when it is not one of this type.
    init?(argument: String)
    /// How help, errors and the README write the value.
    var text: String { get }
    /// Whether this is an optional's nil, which help shows by what absence means.
    var isAbsent: Bool { get }
    /// Whether the value lies in `kind`'s range.
    func isAdmitted(by kind: ValueKind) -> Bool
    /// Reads the value at `key` (present in `container`), throwing a ConfigError or DecodingError that names it.
    static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self
    func encode<K: CodingKey>(to container: inout KeyedEncodingContainer<K>, forKey key: K) throws
}

extension SettingValue {
    public var isAbsent: Bool { false }
    public func isAdmitted(by kind: ValueKind) -> Bool { true }

    public static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self {
        try container.decode(Self.self, forKey: key)
    }

    public func encode<K: CodingKey>(to container: inout KeyedEncodingContainer<K>, forKey key: K) throws {
        try container.encode(self, forKey: key)
    }
}

/// The dotted name of `key` in `container`, as ConfigError spells fields: "train.seed".
func fieldName<K: CodingKey>(_ key: K, in container: KeyedDecodingContainer<K>) -> String {
    (container.codingPath + [key]).map(\.stringValue).joined(separator: ".")
}

extension Int: SettingValue {
    public static var kind: ValueKind { .int(min: Int.min, max: Int.max) }
    public init?(argument: String) { self.init(argument) }
    public var text: String { String(self) }
    public func isAdmitted(by kind: ValueKind) -> Bool { kind.admits(self) }
}

extension UInt64: SettingValue {
    /// A command line's integers are Int, so a flag takes seeds up to 2^63 − 1; a file takes all of UInt64.
    public static var kind: ValueKind { .int(min: 0, max: Int.max) }
    public init?(argument: String) { self.init(argument) }
    public var text: String { String(self) }

    public func isAdmitted(by kind: ValueKind) -> Bool {
        guard case let .int(min, max) = kind else { return false }
        return (min <= 0 || self >= UInt64(min)) && (max == Int.max || (max >= 0 && self <= UInt64(max)))
    }

    /// Foundation reports a negative UInt64 as "not valid JSON" with no field; this names the field.
    public static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self {
        guard let value = try? container.decode(UInt64.self, forKey: key) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: container,
                debugDescription: "must be an integer in 0...2^64-1")
        }
        return value
    }
}

extension Double: SettingValue {
    public static var kind: ValueKind { .number(min: -.infinity, inclusive: true, max: .infinity) }
    public init?(argument: String) { self.init(argument) }
    public var text: String { ValueKind.format(self) }
    public func isAdmitted(by kind: ValueKind) -> Bool { kind.admits(self) }
}

extension Float: SettingValue {
    public static var kind: ValueKind { .number(min: -.infinity, inclusive: true, max: .infinity) }
    public init?(argument: String) { self.init(argument) }
    /// Float's own shortest form (1e-05), not the Double it widens to (9.99999974737875e-06).
    public var text: String { self == rounded() && abs(self) < 1e7 ? String(Int(self)) : "\(self)" }
    public func isAdmitted(by kind: ValueKind) -> Bool { kind.admits(Double(self)) }
}

extension String: SettingValue {
    public static var kind: ValueKind { .text }
    public init?(argument: String) { self = argument }
    public var text: String { self }
}

extension Bool: SettingValue {
    public static var kind: ValueKind { .toggle }
    /// A switch is given as present; the launcher passes "true".
    public init?(argument: String) { self.init(argument) }
    public var text: String { self ? "on" : "off" }
}

/// An absent key: nil, omitted from the JSON (a file's `null` reads as absent too).
extension Optional: SettingValue where Wrapped: SettingValue {
    public static var kind: ValueKind { Wrapped.kind }
    public init?(argument: String) {
        guard let value = Wrapped(argument: argument) else { return nil }
        self = .some(value)
    }
    public var text: String { map(\.text) ?? "absent" }
    public var isAbsent: Bool { self == nil }
    public func isAdmitted(by kind: ValueKind) -> Bool { map { $0.isAdmitted(by: kind) } ?? true }

    public static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self {
        try container.decodeNil(forKey: key) ? nil : try Wrapped.decode(from: container, forKey: key)
    }

    public func encode<K: CodingKey>(to container: inout KeyedEncodingContainer<K>, forKey key: K) throws {
        if let value = self { try value.encode(to: &container, forKey: key) }
    }
}

/// Per-name numbers (mixture weights); checked entry by entry where declared, not by a kind.
extension Dictionary: SettingValue where Key == String, Value == Double {
    public static var kind: ValueKind { .text }
    public init?(argument: String) { return nil }
    public var text: String {
        "{" + sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.text)" }.joined(separator: ", ") + "}"
    }
}

/// An enum of words, spelled in JSON and on the command line by its raw value. A word it lacks is refused
/// naming the field and every word it has.
public protocol SettingChoice: SettingValue, CaseIterable, RawRepresentable where RawValue == String {}

extension SettingChoice {
    public static var kind: ValueKind { .choice(allCases.map(\.rawValue)) }
    public init?(argument: String) { self.init(rawValue: argument) }
    public var text: String { rawValue }

    public static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self {
        let word = try container.decode(String.self, forKey: key)
        guard let value = Self(rawValue: word) else {
            throw ConfigError(
                field: fieldName(key, in: container),
                message: "is '\(word)'; use \(ValueKind.alternatives(allCases.map(\.rawValue)))")
        }
        return value
    }

    public func encode<K: CodingKey>(to container: inout KeyedEncodingContainer<K>, forKey key: K) throws {
        try container.encode(rawValue, forKey: key)
    }
}
