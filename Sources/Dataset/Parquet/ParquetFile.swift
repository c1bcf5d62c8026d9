// An Apache Parquet file, opened: the footer's metadata (read from the end, as the format is written), the
// schema as a tree, and which top-level fields a text corpus or a fine-tuning set can be read from. The
// pages themselves are read column chunk by column chunk (ColumnCursor), so a file of any size costs the
// footer plus one page per column read.
//
// A field is readable when it is a primitive column, or a list (LIST-annotated, three-level or legacy
// two-level) whose elements are primitives or structs of primitives: `messages` as [{role, content}], and
// `chosen`/`rejected` as lists of messages. Other nestings (maps, structs, lists of lists) are refused by
// name when a reader asks for them, and never read otherwise.
import Foundation
import Support

public final class ParquetFile {
    public let path: String
    let file: FileReader
    let metadata: FileMetadata
    let root: SchemaNode
    /// The primitive columns, in the order the row groups store their chunks.
    let leaves: [SchemaNode]

    public var rowGroupCount: Int { metadata.rowGroups.count }
    public var rowCount: Int { Int(metadata.rowCount) }
    /// The top-level field names, in schema order.
    public var fieldNames: [String] { root.children.map(\.element.name) }
    /// Those this reader can rebuild values of (see FieldShape).
    public var readableFieldNames: [String] {
        let supported: Set<ParquetPhysicalType> = [.boolean, .int32, .int64, .float, .double, .byteArray]
        return root.children.filter { node in
            guard let shape = try? FieldShape(node, file: path) else { return false }
            return shape.leaves.allSatisfy { $0.element.type.map(supported.contains) ?? false }
        }.map(\.element.name)
    }

    static let magic: [UInt8] = Array("PAR1".utf8)

    /// Whether `path` starts with Parquet's magic (how inputs are told apart: by content, not name).
    public static func hasMagic(_ path: String) -> Bool {
        guard let file = try? FileReader(path: path), file.size >= 4,
            let head = try? file.bytes(count: 4, at: 0)
        else { return false }
        return head == magic
    }

    public init(path: String) throws {
        self.path = path
        do {
            file = try FileReader(path: path)
        } catch let error as FileError {
            throw DatasetError.unreadable(file: path, reason: error.message)
        }
        let size = file.size
        func fail(_ reason: String) -> DatasetError { .invalid("\(path): \(reason)") }
        guard size >= 12 else {
            throw fail("truncated: \(size) bytes is too short to be Parquet (magic, footer, magic); re-download it")
        }
        guard try file.bytes(count: 4, at: 0) == Self.magic else {
            throw fail("not a Parquet file: it does not start with the magic bytes PAR1")
        }
        let tail = try file.bytes(count: 8, at: size - 8)!
        if Array(tail[4...]) == Array("PARE".utf8) {
            throw fail("its footer is encrypted (PARE), which this reader does not decrypt; decrypt the file first")
        }
        guard Array(tail[4...]) == Self.magic else {
            throw fail(
                "bad magic at the end: the file is truncated (a partial download or copy?) or not Parquet; re-download it"
            )
        }
        let footerLength = Int(UInt32(tail[0]) | UInt32(tail[1]) << 8 | UInt32(tail[2]) << 16 | UInt32(tail[3]) << 24)
        guard footerLength + 12 <= size else {
            throw fail("truncated: the footer says it is \(footerLength) bytes, longer than the file; re-download it")
        }
        let footer = try file.bytes(count: footerLength, at: size - 8 - footerLength)!
        do {
            metadata = try footer.withUnsafeBytes { bytes in
                var reader = ThriftReader(bytes)
                return try FileMetadata(&reader)
            }
        } catch let error as ThriftError {
            throw fail("corrupt footer (\(error)); the file is damaged, re-download or rewrite it")
        }
        guard !metadata.encrypted else { throw fail("its columns are encrypted; decrypt the file first") }
        guard !metadata.schema.isEmpty else { throw fail("corrupt footer: no schema") }
        var next = 0
        root = try SchemaNode.tree(metadata.schema, at: &next, parent: nil, path: path)
        guard next == metadata.schema.count else { throw fail("corrupt footer: the schema has nodes left over") }
        leaves = root.leaves()
        let dataEnd = Int64(size - 8 - footerLength)
        let groupRows = metadata.rowGroups.map(\.rowCount)
        guard groupRows.allSatisfy({ $0 >= 0 }), groupRows.reduce(0, &+) == metadata.rowCount
        else {
            throw fail("corrupt footer: the row groups' row counts do not add up to the file's \(metadata.rowCount)")
        }
        for (g, group) in metadata.rowGroups.enumerated() {
            guard group.columns.count == leaves.count else {
                throw fail(
                    "corrupt footer: row group \(g + 1) has \(group.columns.count) columns, the schema \(leaves.count)")
            }
            for (c, chunk) in group.columns.enumerated() {
                let place = "row group \(g + 1), column '\(leaves[c].dottedPath)'"
                guard chunk.filePath == nil else {
                    throw fail(
                        "\(place) is stored in another file (\(chunk.filePath!)), which this reader does not follow")
                }
                guard chunk.start >= 4, chunk.compressedSize >= 0, chunk.start <= dataEnd,
                    chunk.compressedSize <= dataEnd - chunk.start
                else {
                    throw fail("\(place): the column chunk runs past the data; the file is truncated or damaged")
                }
            }
        }
    }

    /// The row groups part `part` of `parts` reads: group g belongs to the part whose share of the bytes of
    /// `fields`' columns holds g's first byte, so the parts cut the file into contiguous runs for any count.
    public func rowGroups(part: Int, of parts: Int, weightedBy fields: [String]) -> Range<Int> {
        let columns = leaves.indices.filter { leaves[$0].path.first.map(fields.contains) ?? false }
        let sizes = metadata.rowGroups.map { g in max(1, columns.reduce(0) { $0 + Int(g.columns[$1].compressedSize) }) }
        let total = sizes.reduce(0, +)
        var starts: [Int] = []
        var offset = 0
        for s in sizes {
            starts.append(offset)
            offset += s
        }
        func owner(_ start: Int) -> Int {
            min(parts - 1, Int((Double(start) * Double(parts) / Double(total)).rounded(.down)))
        }
        let mine = starts.indices.filter { owner(starts[$0]) == part }
        guard let first = mine.first, let last = mine.last else {
            let at = starts.indices.first { owner(starts[$0]) > part } ?? starts.count
            return at..<at
        }
        return first..<(last + 1)
    }

    /// Row numbers (0-based, in the file) of the first row of each group.
    func firstRow(ofGroup g: Int) -> Int { metadata.rowGroups[..<g].reduce(0) { $0 + Int($1.rowCount) } }

    /// How a top-level field is read, or an error naming it and why it cannot be.
    func field(_ name: String) throws -> FieldShape {
        guard let node = root.children.first(where: { $0.element.name == name }) else {
            throw DatasetError.invalid(
                "\(path): no column '\(name)' (its columns: \(fieldNames.joined(separator: ", ")))")
        }
        return try FieldShape(node, file: path)
    }
}

/// A schema node with its place: the definition and repetition levels a value at it has when present.
final class SchemaNode {
    let element: SchemaElement
    var children: [SchemaNode] = []
    let path: [String]
    let maxDefinition: Int
    let maxRepetition: Int
    /// The column index of a leaf.
    var leafIndex: Int?

    var dottedPath: String { path.joined(separator: ".") }
    var isLeaf: Bool { children.isEmpty && element.type != nil }

    init(_ element: SchemaElement, parent: SchemaNode?) {
        self.element = element
        path = (parent?.path ?? []) + (parent == nil ? [] : [element.name])
        let isRoot = parent == nil
        maxDefinition = (parent?.maxDefinition ?? 0) + (!isRoot && element.repetition != .required ? 1 : 0)
        maxRepetition = (parent?.maxRepetition ?? 0) + (!isRoot && element.repetition == .repeated ? 1 : 0)
    }

    static func tree(
        _ elements: [SchemaElement], at next: inout Int, parent: SchemaNode?, path: String
    ) throws
        -> SchemaNode
    {
        guard next < elements.count else {
            throw DatasetError.invalid("\(path): corrupt footer: the schema ends early")
        }
        guard (parent?.path.count ?? 0) < 64 else {
            throw DatasetError.invalid("\(path): corrupt footer: the schema nests more than 64 deep")
        }
        let node = SchemaNode(elements[next], parent: parent)
        next += 1
        guard node.element.childCount >= 0, node.element.childCount <= elements.count - next else {
            throw DatasetError.invalid(
                "\(path): corrupt footer: schema node '\(node.element.name)' has too many children")
        }
        for _ in 0..<node.element.childCount {
            node.children.append(try tree(elements, at: &next, parent: node, path: path))
        }
        guard !node.children.isEmpty || node.element.type != nil || parent == nil else {
            throw DatasetError.invalid("\(path): corrupt footer: schema node '\(node.element.name)' has no type")
        }
        return node
    }

    func leaves() -> [SchemaNode] {
        var out: [SchemaNode] = []
        func walk(_ n: SchemaNode) {
            if n.isLeaf {
                n.leafIndex = out.count
                out.append(n)
            }
            n.children.forEach(walk)
        }
        walk(self)
        return out
    }
}

/// How one top-level field's values are rebuilt from its leaves' levels.
enum FieldShape {
    /// A primitive: present when the definition level is the leaf's maximum.
    case value(SchemaNode)
    /// A list: null below `present`, empty below `nonEmpty`, an element from there on, itself null below
    /// `elementPresent`.
    case list(present: Int, nonEmpty: Int, elementPresent: Int, element: ListElement)

    enum ListElement {
        case value(SchemaNode)
        case structure([(name: String, leaf: SchemaNode)])
    }

    var leaves: [SchemaNode] {
        switch self {
        case let .value(leaf): [leaf]
        case let .list(_, _, _, .value(leaf)): [leaf]
        case let .list(_, _, _, .structure(members)): members.map(\.leaf)
        }
    }

    init(_ node: SchemaNode, file: String) throws {
        let name = node.element.name
        func refuse(_ why: String) -> DatasetError {
            .invalid(
                "\(file): column '\(name)' is \(why); only strings, numbers, booleans and lists of them or of structs of them are read"
            )
        }
        if node.isLeaf {
            guard node.element.repetition != .repeated else {
                // A bare repeated primitive: never null, empty when it has no entry.
                self = .list(
                    present: node.maxDefinition - 1, nonEmpty: node.maxDefinition, elementPresent: node.maxDefinition,
                    element: .value(node))
                return
            }
            self = .value(node)
            return
        }
        guard !node.element.isMap else { throw refuse("a map") }
        guard node.element.isList, node.element.repetition != .repeated, node.children.count == 1,
            node.children[0].element.repetition == .repeated
        else { throw refuse(node.element.repetition == .repeated ? "a repeated group" : "a struct") }
        let repeated = node.children[0]
        // The spec's backward-compatibility rules: the repeated node is itself the element when it is a
        // primitive, has several fields, or is named "array" or "<list>_tuple"; else its one child is.
        let element: SchemaNode
        if repeated.isLeaf || repeated.children.count > 1 || repeated.element.name == "array"
            || repeated.element.name == name + "_tuple"
        {
            element = repeated
        } else {
            element = repeated.children[0]
        }
        let shape: ListElement
        if element.isLeaf {
            shape = .value(element)
        } else {
            guard !element.element.isList, element.children.allSatisfy({ $0.element.repetition != .repeated }) else {
                throw refuse("a list of lists")
            }
            guard !element.element.isMap, element.children.allSatisfy(\.isLeaf) else {
                throw refuse("a list of nested structs or maps")
            }
            shape = .structure(element.children.map { ($0.element.name, $0) })
        }
        self = .list(
            present: node.maxDefinition, nonEmpty: repeated.maxDefinition,
            elementPresent: element.maxDefinition, element: shape)
    }
}
