/// A kernel helper function, called with `call <id>`.
///
/// Every helper of the kernel's `linux/bpf.h` is a static member (`.skAssign`, `.mapLookupElem`,
/// …); an id this catalogue does not know still passes through as a raw value.
///
/// ```swift
/// Instruction.call(.skAssign)      // call 0x7c
/// HelperFunction(name: "sk_release") // .skRelease
/// ```
public struct HelperFunction: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    private static let namesByID: [Int32: String] = Dictionary(
        catalogue.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
    private static let idsByName: [String: Int32] = Dictionary(
        catalogue.map { ($0.name, $0.id) }, uniquingKeysWith: { first, _ in first })

    /// Every helper in the catalogue, in id order.
    public static var all: [HelperFunction] { catalogue.map { HelperFunction(rawValue: $0.id) } }

    /// Looks a helper up by its kernel name, with or without the `bpf_` prefix
    /// (`"sk_assign"`, `"bpf_sk_assign"`).
    public init?(name: String) {
        let bare = name.hasPrefix("bpf_") ? String(name.dropFirst(4)) : name
        guard let id = Self.idsByName[bare] else { return nil }
        self.rawValue = id
    }

    /// The kernel name without the `bpf_` prefix (`sk_assign`), or `nil` for an unknown id.
    public var name: String? { Self.namesByID[rawValue] }

    /// `bpf_<name>`, or `helper#<id>` for an unknown id.
    public var description: String { name.map { "bpf_\($0)" } ?? "helper#\(rawValue)" }
}
