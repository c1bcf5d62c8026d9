// What a setting or a command-line flag accepts: an integer range, a number interval, free text, one of a set
// of words, a switch, or a list; the words help and errors use for it, and the check a value must pass. One
// type serves the config's declarations (Settings.swift) and the launcher's flags, so a range is written once
// and a flag refuses exactly what its config key refuses.
//
// What this is not: a parser of command lines (the launcher's Arguments) or of JSON (Settings.swift); it
// checks one value at a time.

public enum ValueKind: Sendable, Equatable {
    /// An integer in min...max; a max of Int.max means no upper bound.
    case int(min: Int, max: Int)
    /// A finite number above `min` (at least `min` when `inclusive`) and at most `max` (below it when not
    /// `maxInclusive`); an infinite max means no upper bound.
    case number(min: Double, inclusive: Bool, max: Double, maxInclusive: Bool = true)
    case text
    /// One of a fixed set of words.
    case choice([String])
    /// Present or absent; takes no value.
    case toggle
    /// Every value up to the next flag.
    case list

    /// What the kind accepts, for help and for errors: "an integer in 1...1048576", "a number ≥ 0 and < 1".
    public var accepts: String {
        switch self {
        case let .int(min, max):
            max < Int.max ? "an integer in \(min)...\(max)" : min > Int.min ? "an integer ≥ \(min)" : "an integer"
        case let .number(min, inclusive, max, maxInclusive):
            switch (min.isFinite, max.isFinite) {
            case (true, true):
                "a number \(inclusive ? "≥" : ">") \(Self.format(min)) and "
                    + "\(maxInclusive ? "≤" : "<") \(Self.format(max))"
            case (true, false): "a number \(inclusive ? "≥" : ">") \(Self.format(min))"
            case (false, true): "a number \(maxInclusive ? "≤" : "<") \(Self.format(max))"
            case (false, false): "a number"
            }
        case .text: "a value"
        case let .choice(words): Self.alternatives(words)
        case .toggle: "no value"
        case .list: "one or more values"
        }
    }

    /// What stands for the value in usage text when a declaration names nothing better.
    public var placeholder: String {
        switch self {
        case .int: "N"
        case .number: "X"
        case .text, .list: "VALUE"
        case .choice, .toggle: ""
        }
    }

    /// Kinds whose help needs no "(accepts …)" note: the placeholder says it all.
    public var isFree: Bool {
        switch self {
        case .text, .toggle, .list: true
        default: false
        }
    }

    public func admits(_ x: Int) -> Bool {
        guard case let .int(min, max) = self else { return false }
        return x >= min && x <= max
    }

    public func admits(_ x: Double) -> Bool {
        guard case let .number(min, inclusive, max, maxInclusive) = self else { return false }
        return x.isFinite && (inclusive ? x >= min : x > min) && (maxInclusive ? x <= max : x < max)
    }

    /// Whether a command-line value is one this kind accepts (a switch and a list take anything given).
    public func admits(argument value: String) -> Bool {
        switch self {
        case .int: Int(value).map(admits) ?? false
        case .number: Double(value).map(admits) ?? false
        case let .choice(words): words.contains(value)
        case .text: !value.isEmpty
        case .toggle, .list: true
        }
    }

    /// 1, 0.001, 1048576: whole numbers without ".0", others as Swift writes them.
    public static func format(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : "\(x)"
    }

    /// "a", "a or b", "a, b or c".
    public static func alternatives(_ words: [String]) -> String {
        words.count <= 1 ? words.joined() : words.dropLast().joined(separator: ", ") + " or " + words.last!
    }
}
