//! A small parser for the kernel's BTF, over bytes (no I/O: [`super`] reads
//! the file): just enough to find struct member offsets, enum values and
//! tracepoint prototypes.
//!
//! Rust eBPF programs have no CO-RE field relocations, so the agent resolves the
//! offsets its programs need here and passes them in as globals before load.
//! aya's own `Btf` does not expose member offsets. Format reference:
//! `Documentation/bpf/btf.rst` and `include/uapi/linux/btf.h`.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no {kind} named `{name}`")]
    NoSuchType { kind: &'static str, name: String },
    #[error("BTF: `{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("BTF: `{ty}.{member}` is a bitfield, not a byte-addressable member")]
    Bitfield { ty: String, member: String },
    #[error("BTF: enum `{ty}` has no value `{name}`")]
    NoSuchEnumValue { ty: String, name: String },
}

/// See [`Btf::member_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLayout {
    pub offset: u32,
    pub type_name: String,
    pub elem_size: u32,
    pub count: u32,
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset inside the containing struct.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union (`is_union` matters only for Debug output).
    Composite {
        name: u32,
        /// sizeof, in bytes.
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        name: u32,
        size: u32,
        values: Vec<(u32, i64)>,
    },
    Int {
        size: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    /// PTR, TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG: name + the type it refers to.
    Ref {
        kind: u32,
        name: u32,
        to: u32,
    },
    FuncProto {
        params: Vec<u32>,
    },
    Func {
        name: u32,
        /// The FUNC_PROTO type id.
        proto: u32,
    },
    Other,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Parses raw BTF (native endianness, as the kernel exports it).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Malformed("shorter than a header"));
        }
        if u16::from_ne_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_raw = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type::Other]; // id 0: void
        let mut off = 0;
        while off < types_raw.len() {
            let name = u32_at(types_raw, off)?;
            let info = u32_at(types_raw, off + 4)?;
            let size_or_type = u32_at(types_raw, off + 8)?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    off += 4;
                    Type::Int { size: size_or_type }
                }
                KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_TYPE_TAG => Type::Ref {
                    kind,
                    name,
                    to: size_or_type,
                },
                KIND_ARRAY => {
                    let elem = u32_at(types_raw, off)?;
                    let nelems = u32_at(types_raw, off + 8)?;
                    off += 12;
                    Type::Array { elem, nelems }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(types_raw, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (raw & 0xff_ffff, raw >> 24)
                        } else {
                            (raw, 0)
                        };
                        members.push(Member {
                            name: u32_at(types_raw, m)?,
                            ty: u32_at(types_raw, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    off += vlen * 12;
                    Type::Composite {
                        name,
                        size: size_or_type,
                        members,
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 8;
                        let v = u32_at(types_raw, m + 4)?;
                        let v = if kind_flag {
                            i64::from(v as i32)
                        } else {
                            i64::from(v)
                        };
                        values.push((u32_at(types_raw, m)?, v));
                    }
                    off += vlen * 8;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        values,
                    }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let lo = u64::from(u32_at(types_raw, m + 4)?);
                        let hi = u64::from(u32_at(types_raw, m + 8)?);
                        values.push((u32_at(types_raw, m)?, ((hi << 32) | lo) as i64));
                    }
                    off += vlen * 12;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        values,
                    }
                }
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        params.push(u32_at(types_raw, off + i * 8 + 4)?);
                    }
                    off += vlen * 8;
                    Type::FuncProto { params }
                }
                KIND_FUNC => Type::Func {
                    name,
                    proto: size_or_type,
                },
                KIND_VAR | KIND_DECL_TAG => {
                    off += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    off += vlen * 12;
                    Type::Other
                }
                KIND_FWD | KIND_FLOAT => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(ty);
        }

        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            let name = match ty {
                Type::Composite { name, .. }
                | Type::Enum { name, .. }
                | Type::Ref { name, .. }
                | Type::Func { name, .. } => *name,
                _ => 0,
            };
            if name != 0 {
                by_name
                    .entry(btf.str_at(name).to_owned())
                    .or_default()
                    .push(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn named(&self, name: &str, pred: impl Fn(&Type) -> bool) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| pred(&self.types[id as usize]))
    }

    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        // A struct can appear once as a forward declaration and once with its
        // members; take the one with members.
        self.named(
            name,
            |t| matches!(t, Type::Composite { members, .. } if !members.is_empty()),
        )
        .ok_or_else(|| BtfError::NoSuchType {
            kind: "struct",
            name: name.to_owned(),
        })
    }

    /// Byte offset of `member` inside struct or union `ty`, looking through
    /// anonymous struct/union members as C does.
    pub fn member_offset(&self, ty: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.composite(ty)?;
        match self.find_member(id, member, 0) {
            Some((bits, 0)) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(BtfError::Bitfield {
                ty: ty.to_owned(),
                member: member.to_owned(),
            }),
            None => Err(BtfError::NoSuchMember {
                ty: ty.to_owned(),
                member: member.to_owned(),
            }),
        }
    }

    /// Whether struct `ty` exists and has `member`.
    pub fn has_member(&self, ty: &str, member: &str) -> bool {
        self.member_offset(ty, member).is_ok()
    }

    /// Where `member` of struct `ty` is and what it holds: its byte offset,
    /// its type's name (an array's element type's, through typedefs to the
    /// first named struct, union or typedef), the size of one element, and
    /// the number of elements (1 for a plain member).
    pub fn member_layout(&self, ty: &str, member: &str) -> Result<MemberLayout, BtfError> {
        let offset = self.member_offset(ty, member)?;
        let id = self.composite(ty)?;
        let ty_id = self
            .find_member_type(id, member)
            .ok_or_else(|| BtfError::NoSuchMember {
                ty: ty.to_owned(),
                member: member.to_owned(),
            })?;
        let stripped = self.strip_modifiers(ty_id);
        let (elem, count) = match self.types.get(stripped as usize) {
            Some(Type::Array { elem, nelems }) => (*elem, *nelems),
            _ => (ty_id, 1),
        };
        Ok(MemberLayout {
            offset,
            type_name: self.type_name(elem),
            elem_size: self.type_size(elem).unwrap_or(0),
            count,
        })
    }

    fn find_member_type(&self, id: u32, member: &str) -> Option<u32> {
        let Type::Composite { members, .. } = &self.types[id as usize] else {
            return None;
        };
        for m in members {
            if m.name == 0 {
                if let Some(t) = self.find_member_type(self.strip_modifiers(m.ty), member) {
                    return Some(t);
                }
            } else if self.str_at(m.name) == member {
                return Some(m.ty);
            }
        }
        None
    }

    /// The first name met following `id` through modifiers and typedefs.
    fn type_name(&self, mut id: u32) -> String {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Composite { name, .. } | Type::Enum { name, .. }) if *name != 0 => {
                    return self.str_at(*name).to_owned();
                }
                Some(Type::Ref { kind, name, .. }) if *kind == KIND_TYPEDEF && *name != 0 => {
                    return self.str_at(*name).to_owned();
                }
                Some(Type::Ref { kind, to, .. }) if *kind != KIND_PTR => id = *to,
                _ => break,
            }
        }
        String::new()
    }

    /// sizeof the type `id`, where BTF says it.
    fn type_size(&self, id: u32) -> Option<u32> {
        match self.types.get(self.strip_modifiers(id) as usize)? {
            Type::Composite { size, .. } | Type::Enum { size, .. } | Type::Int { size } => {
                Some(*size)
            }
            Type::Ref { kind, .. } if *kind == KIND_PTR => Some(8),
            Type::Array { elem, nelems } => Some(self.type_size(*elem)? * nelems),
            _ => None,
        }
    }

    /// sizeof struct or union `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = self.composite(name)?;
        match &self.types[id as usize] {
            Type::Composite { size, .. } => Ok(*size),
            _ => unreachable!("composite() returns a struct or union"),
        }
    }

    /// The value of enumerator `name` in whichever enum defines it (for the
    /// kernel's anonymous enums, such as `MM_FILEPAGES`).
    pub fn enum_constant(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { values, .. } => values
                .iter()
                .find(|(n, _)| self.str_at(*n) == name)
                .map(|&(_, v)| v),
            _ => None,
        })
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<(u32, u32)> {
        let Type::Composite { members, .. } = &self.types[id as usize] else {
            return None;
        };
        for m in members {
            if m.name == 0 {
                let inner = self.strip_modifiers(m.ty);
                if let Some(found) = self.find_member(inner, member, base_bits + m.bit_offset) {
                    return Some(found);
                }
            } else if self.str_at(m.name) == member {
                return Some((base_bits + m.bit_offset, m.bitfield_size));
            }
        }
        None
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn strip_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Ref { kind, to, .. }) if *kind != KIND_PTR => id = *to,
                _ => break,
            }
        }
        id
    }

    /// Value of `name` in enum `ty` (plain or 64-bit enum).
    pub fn enum_value(&self, ty: &str, name: &str) -> Result<i64, BtfError> {
        let id = self
            .named(ty, |t| matches!(t, Type::Enum { .. }))
            .ok_or_else(|| BtfError::NoSuchType {
                kind: "enum",
                name: ty.to_owned(),
            })?;
        let Type::Enum { values, .. } = &self.types[id as usize] else {
            unreachable!("named() matched an enum");
        };
        values
            .iter()
            .find(|(n, _)| self.str_at(*n) == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| BtfError::NoSuchEnumValue {
                ty: ty.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Whether the kernel has a BTF function `name` (an fentry/fexit target).
    pub fn has_func(&self, name: &str) -> bool {
        self.named(name, |t| matches!(t, Type::Func { .. }))
            .is_some()
    }

    /// How many parameters the kernel function `name` takes, from its BTF
    /// prototype; None without such a function. An fexit program finds the
    /// return value right after them.
    pub fn func_param_count(&self, name: &str) -> Option<usize> {
        let id = self.named(name, |t| matches!(t, Type::Func { .. }))?;
        let Type::Func { proto, .. } = &self.types[id as usize] else {
            return None;
        };
        match self.types.get(*proto as usize)? {
            Type::FuncProto { params } => Some(params.len()),
            _ => None,
        }
    }

    /// Whether argument `n` (0-based, as in `TP_PROTO`) of the raw tracepoint
    /// `tp` is a pointer. `None` if the kernel has no such tracepoint or no such
    /// argument. Uses the `btf_trace_<tp>` typedef that tp_btf programs bind to:
    /// a pointer to a prototype whose first parameter is the hidden `void *`.
    pub fn tracepoint_arg_is_pointer(&self, tp: &str, n: usize) -> Option<bool> {
        let id = self.named(&format!("btf_trace_{tp}"), |t| {
            matches!(
                t,
                Type::Ref {
                    kind: KIND_TYPEDEF,
                    ..
                }
            )
        })?;
        let Type::Ref { to: ptr, .. } = &self.types[id as usize] else {
            return None;
        };
        let Type::Ref { to: proto, .. } = &self.types[self.strip_modifiers(*ptr) as usize] else {
            return None;
        };
        let Type::FuncProto { params } = &self.types[*proto as usize] else {
            return None;
        };
        let arg = *params.get(n + 1)?;
        Some(matches!(
            self.types.get(self.strip_modifiers(arg) as usize),
            Some(Type::Ref { kind: KIND_PTR, .. })
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.push(1); // version
        b.push(0); // flags
        for w in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        b.extend_from_slice(&type_bytes);
        b.extend_from_slice(strings);
        b
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    /// struct outer { int a; union { int x; int y; }; int bf:3; } at bit
    /// offsets 0, 32 and 64; enum e { A = 0, B = 7 }.
    fn sample() -> Btf {
        // strings: 0 "", 1 "int", 5 "outer", 11 "a", 13 "x", 15 "y", 17 "bf", 20 "e", 22 "A", 24 "B"
        let strings = b"\0int\0outer\0a\0x\0y\0bf\0e\0A\0B\0";
        #[rustfmt::skip]
        let types = [
            // 1: int
            1, info(KIND_INT, 0, false), 4, 0x0100_0020,
            // 2: anonymous union { int x; int y; }
            0, info(KIND_UNION, 2, false), 4,
                13, 1, 0,
                15, 1, 0,
            // 3: struct outer, kind_flag set: bitfield sizes in the top byte
            5, info(KIND_STRUCT, 3, true), 12,
                11, 1, 0,
                0, 2, 32,
                17, 1, (3 << 24) | 64,
            // 4: enum e
            20, info(KIND_ENUM, 2, false), 4,
                22, 0,
                24, 7,
        ];
        Btf::parse(&blob(&types, strings)).expect("sample parses")
    }

    #[test]
    fn member_offsets_including_anonymous_unions() {
        let btf = sample();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("outer", "bf"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoSuchMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoSuchType { .. })
        ));
    }

    #[test]
    fn enum_values() {
        let btf = sample();
        assert_eq!(btf.enum_value("e", "B").unwrap(), 7);
        assert!(btf.enum_value("e", "C").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut b = blob(&[1, info(KIND_STRUCT, 9, false), 4], b"\0s\0");
        assert!(Btf::parse(&b).is_err(), "members run past the section");
        b.truncate(30);
        assert!(Btf::parse(&b).is_err());
    }
}
