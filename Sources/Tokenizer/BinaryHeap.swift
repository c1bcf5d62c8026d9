// A binary max-heap over an array, ordered by a comparator given at each call (so the comparator may read
// state the heap does not own, as the trainer's pair counts). Shared by encoding and training.

struct BinaryHeap<Element> {
    private(set) var items: [Element] = []

    init(capacity: Int = 0) { items.reserveCapacity(capacity) }

    var isEmpty: Bool { items.isEmpty }

    /// Adds `element`; `before(a, b)` says a comes out first.
    @inline(__always)
    mutating func push(_ element: Element, by before: (Element, Element) -> Bool) {
        items.append(element)
        var c = items.count - 1
        while c > 0 {
            let parent = (c - 1) / 2
            guard before(items[c], items[parent]) else { break }
            items.swapAt(c, parent)
            c = parent
        }
    }

    /// Removes and returns the first element.
    @inline(__always)
    mutating func pop(by before: (Element, Element) -> Bool) -> Element? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var c = 0
            while true {
                let l = 2 * c + 1, r = l + 1
                var best = c
                if l < items.count && before(items[l], items[best]) { best = l }
                if r < items.count && before(items[r], items[best]) { best = r }
                if best == c { break }
                items.swapAt(c, best)
                c = best
            }
        }
        return top
    }
}
