// Each key of a settings block declared once: its JSON name, its type (the key path's), its default and the
// reason for it, its range or choices, its help, an optional command-line flag, and the key path into the
// block's struct. From a block's list of declarations come its decoding (errors name `section.key`), its
// encoding, its range checks, its flags and their help (the default appended from here, so help never restates
// one by hand), its fingerprint names and its documentation table.
//
//   static let settings = SettingsBlock<TrainSettings>("train", [
//       Setting(\.seqLen, "seq_len", 256, because: "fits 2 cores", .int(min: 1, max: 4096), help: "tokens"),
//   ])
//   public var seqLen: Int = Self.settings.defaultValue(\.seqLen)   // the struct's initial value is the declared one
//
// What this is not: cross-field rules (a batch that must divide, a choice valid only beside another); those stay
// explicit checks beside the block. It knows no model or trainer: any module may declare a block.

/// A key of a settings block as JSON spells it.
public struct SettingKey: CodingKey, Sendable {
    public let stringValue: String
    public init(_ name: String) { stringValue = name }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public var intValue: Int? { nil }
    public init?(intValue: Int) { nil }
}

public struct Setting<Root>: Sendable {
    /// When the value is written to JSON.
    public enum Encoding: Sendable {
        case always
        /// Omitted at its default, so files written before the key existed read (and hash) as they did.
        case unlessDefault
    }

    /// The key as the file spells it ("seq_len"); for command-line-only settings, the flag's name.
    public let name: String
    /// The command-line flag that sets it, without "--"; nil when only the file does.
    public let flag: String?
    public let kind: ValueKind
    /// What stands for the value in usage text (N, FILE, DIR).
    public let placeholder: String
    public let help: String
    /// The default as help and tables show it ("256", "absent"); nil for a required key.
    public let defaultText: String?
    /// Why the default is what it is (or what absence means).
    public let because: String
    public let keyPath: AnyKeyPath & Sendable
    /// The default (an Optional's nil included); nil for a required key.
    let defaultValue: (any Sendable)?
    /// Whether the default is an absent (nil) value, shown by what absence means.
    let defaultIsAbsent: Bool
    let restoreDefault: @Sendable (inout Root) -> Void
    let decode: @Sendable (inout Root, KeyedDecodingContainer<SettingKey>) throws -> Void
    let encode: @Sendable (Root, inout KeyedEncodingContainer<SettingKey>) throws -> Void
    /// The value's text when it lies outside `kind`, else nil.
    let outOfRange: @Sendable (Root) -> String?
    let parse: @Sendable (inout Root, String) -> Bool
    let valueText: @Sendable (Root) -> String

    /// A key with a default: absent from the file, it keeps `value`.
    public init<V: SettingValue>(
        _ keyPath: WritableKeyPath<Root, V> & Sendable, _ name: String, _ value: V,
        because: String, _ kind: ValueKind? = nil, flag: String? = nil,
        placeholder: String? = nil, encoding: Encoding = .always, help: String
    ) {
        self.init(
            declaring: keyPath, name, value as V?, because: because, kind ?? V.kind, flag: flag,
            placeholder: placeholder, encoding: encoding, help: help)
    }

    /// A key the file must give.
    public init<V: SettingValue>(
        required keyPath: WritableKeyPath<Root, V> & Sendable, _ name: String,
        _ kind: ValueKind? = nil, flag: String? = nil, placeholder: String? = nil,
        help: String
    ) {
        self.init(
            declaring: keyPath, name, nil, because: "required", kind ?? V.kind, flag: flag,
            placeholder: placeholder, encoding: .always, help: help)
    }

    /// A command-line-only setting: its name is its flag's.
    public static func flag<V: SettingValue>(
        _ name: String, _ keyPath: WritableKeyPath<Root, V> & Sendable, _ value: V,
        because: String, _ kind: ValueKind? = nil, placeholder: String? = nil,
        help: String
    ) -> Setting {
        Setting(keyPath, name, value, because: because, kind, flag: name, placeholder: placeholder, help: help)
    }

    /// `value` nil: required.
    private init<V: SettingValue>(
        declaring keyPath: WritableKeyPath<Root, V> & Sendable, _ name: String, _ value: V?,
        because: String, _ kind: ValueKind, flag: String?, placeholder: String?,
        encoding: Encoding, help: String
    ) {
        (self.name, self.flag, self.kind, self.help, self.because) = (name, flag, kind, help, because)
        self.placeholder = placeholder ?? kind.placeholder
        self.keyPath = keyPath
        defaultValue = value
        defaultText = value?.text
        defaultIsAbsent = value?.isAbsent ?? false
        restoreDefault = { root in if let value { root[keyPath: keyPath] = value } }
        decode = { root, container in
            let key = SettingKey(name)
            if container.contains(key) {
                root[keyPath: keyPath] = try V.decode(from: container, forKey: key)
            } else if value == nil {
                throw ConfigError(field: fieldName(key, in: container), message: "is required")
            }
        }
        encode = { root, container in
            let current = root[keyPath: keyPath]
            if encoding == .unlessDefault && current == value { return }
            try current.encode(to: &container, forKey: SettingKey(name))
        }
        outOfRange = { root in
            let current = root[keyPath: keyPath]
            return current.isAdmitted(by: kind) ? nil : current.text
        }
        parse = { root, argument in
            guard let parsed = V(argument: argument), parsed.isAdmitted(by: kind) else { return false }
            root[keyPath: keyPath] = parsed
            return true
        }
        valueText = { $0[keyPath: keyPath].text }
    }

    /// The help line's tail: what the value accepts and its default ("an integer ≥ 1; default 1"). An absent
    /// default shows what absence means.
    public var helpNote: String {
        var parts = kind.isFree ? [] : [kind.accepts]
        if let defaultText, !(kind == .toggle) {
            parts.append(defaultIsAbsent ? "default: \(because)" : "default \(defaultText)")
        }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: "; ") + ")"
    }

    /// Writes a command-line value; false when it is not one the setting accepts.
    public func apply(argument: String, to root: inout Root) -> Bool { parse(&root, argument) }

    /// The value in `root` as help and errors write it.
    public func text(in root: Root) -> String { valueText(root) }
}

public struct SettingsBlock<Root>: Sendable {
    /// The block's name in the file ("train"), the prefix of every field an error names.
    public let section: String
    public let settings: [Setting<Root>]

    public init(_ section: String, _ settings: [Setting<Root>]) {
        precondition(Set(settings.map(\.name)).count == settings.count, "\(section) declares a key twice")
        self.section = section
        self.settings = settings
    }

    /// The keys in declaration order, which is also the order they are written in.
    public var names: [String] { settings.map(\.name) }

    public subscript(name: String) -> Setting<Root> {
        guard let setting = settings.first(where: { $0.name == name }) else {
            preconditionFailure("\(section) declares no key \(name)")
        }
        return setting
    }

    public func setting(_ keyPath: PartialKeyPath<Root>) -> Setting<Root> {
        guard let setting = settings.first(where: { $0.keyPath == keyPath as AnyKeyPath }) else {
            preconditionFailure("\(section) declares no key for \(keyPath)")
        }
        return setting
    }

    /// The declared default of a property: what the struct's own initial values are written as.
    public func defaultValue<V>(_ keyPath: KeyPath<Root, V>) -> V {
        let setting = setting(keyPath)
        // Checked first: a required optional's missing default would otherwise cast to nil.
        guard setting.defaultText != nil, let value = setting.defaultValue as? V else {
            preconditionFailure("\(section).\(setting.name) is required and has no default")
        }
        return value
    }

    /// Writes every declared default into `root` (for structs whose own defaults live elsewhere).
    public func setDefaults(_ root: inout Root) {
        for setting in settings { setting.restoreDefault(&root) }
    }

    /// Reads every declared key present in the decoder's object into `root` (which holds the defaults).
    public func decode(_ root: inout Root, from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: SettingKey.self)
        for setting in settings { try setting.decode(&root, container) }
    }

    public func encode(_ root: Root, to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: SettingKey.self)
        for setting in settings { try setting.encode(root, &container) }
    }

    /// The first key present in a file's object that this block does not declare, as a ConfigError that lists
    /// the known keys: a typo must never silently fall back to a default.
    public func checkKnown(_ keys: some Sequence<String>, file: String? = nil) throws {
        let known = Set(names)
        if let unknown = keys.sorted().first(where: { !known.contains($0) }) {
            throw ConfigError(
                file: file, field: "\(section).\(unknown)",
                message: "unknown key; known keys: \(known.sorted().joined(separator: ", "))")
        }
    }

    /// Every value against its declared range, in declaration order; the error names `section.key`, what the
    /// key accepts and its default.
    public func checkRanges(_ root: Root, file: String? = nil) throws {
        for setting in settings {
            guard let bad = setting.outOfRange(root) else { continue }
            throw ConfigError(
                file: file, field: "\(section).\(setting.name)",
                message: "must be \(setting.kind.accepts), got \(bad)"
                    + (setting.defaultText.map { " (default \($0))" } ?? ""))
        }
    }

    /// The settings the command line may set.
    public var flagged: [Setting<Root>] { settings.filter { $0.flag != nil } }
}

extension SettingsBlock {
    /// The block as a Markdown table (key, meaning, default and why, what it accepts, flag): the README's
    /// tables are this text, and a test holds them to it.
    public func markdownTable() -> String {
        func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }
        var lines = ["| `\(section)` key | meaning | default | accepts | flag |", "|---|---|---|---|---|"]
        for s in settings {
            let value: String
            switch s.defaultText {
            case nil: value = "required"
            case _ where s.defaultIsAbsent: value = "absent: \(s.because)"
            case let text?: value = "`\(text)`: \(s.because)"
            }
            let accepts = s.kind.isFree ? "`\(s.placeholder.isEmpty ? "text" : s.placeholder)`" : s.kind.accepts
            let row = ["`\(s.name)`", s.help, value, accepts, s.flag.map { "`--\($0)`" } ?? ""].map(cell)
            lines.append("| " + row.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }
}
