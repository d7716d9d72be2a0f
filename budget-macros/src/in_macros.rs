//! Step boundaries for loops written inside macro invocations of the function's body.
//!
//! A macro's input is only tokens: the attribute cannot know what the macro does with them.
//! It assumes what `vec!`, `assert!`, `format!`, `tokio::select!` and `tokio::join!` do: the
//! code in them runs in place, in the function's body. Two ways in, tried in order:
//!
//! 1. **Comma-separated expressions** (`vec![a, b]`, `assert!(c, "..", x)`, `format!`,
//!    `join!(a, b)`): the tokens are parsed as `Expr, Expr, ..` and each expression is visited
//!    exactly as the body is, closures, `async` blocks and nested items excepted.
//! 2. **Anything else** (`select!` arms `pat = fut => { .. }`, `vec![x; n]`, a DSL): a walk
//!    over the token trees. It recognises `loop {`, `while <header> {` and `for <header> {`,
//!    puts the step boundary first in the body group, and recurses into every other group.
//!    It is conservative; when in doubt it leaves a loop as written, never the other way:
//!    - a `while`/`for` header must end the way a condition can end just before a body
//!      (an identifier, a literal, `)`, `]`, `?` or `..`), `for` needs its `in`, and a header
//!      holding a block-like keyword (`match`, `if`, `unsafe`, `loop`, ..), a closure, `,`,
//!      `;` or `=>` gets no boundary of its own (its groups are still walked);
//!    - a closure (`|` where an operand cannot end, `move |..|`) is skipped up to the next
//!      `,`, `;` or `=>` of its group; an `async` or `const` block is skipped whole; a nested
//!      item (`fn`, `impl`, `struct`, `mod`, `macro_rules!`, ..) is skipped up to its `;` or
//!      its body; attributes, labels, lifetimes and `::<{ .. }>` const arguments are copied.
//!
//! Macros that do not run their input ([`UNTOUCHED`]: `stringify!`, `concat!`, `quote!`,
//! `include!`, `macro_rules!`, ..) keep their tokens exactly. Nothing changes unless a loop
//! was found: a macro without loops gets back its tokens as written.

use proc_macro2::{Delimiter, Group, Ident, Spacing, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit_mut::VisitMut;
use syn::{Expr, Token};

use crate::expand::StepBoundaries;

/// Macros whose input is not code run in place: they quote, stringify, include or define it.
const UNTOUCHED: &[&str] = &[
    "asm",
    "cfg",
    "column",
    "compile_error",
    "concat",
    "concat_bytes",
    "concat_idents",
    "env",
    "file",
    "format_ident",
    "global_asm",
    "include",
    "include_bytes",
    "include_str",
    "line",
    "log_syntax",
    "macro_rules",
    "module_path",
    "naked_asm",
    "option_env",
    "parse_quote",
    "parse_quote_spanned",
    "quote",
    "quote_spanned",
    "stringify",
    "trace_macros",
];

/// Keywords after which an expression can start: a `|` after them opens a closure, and a
/// brace group after them is not a loop body.
const NOT_AN_OPERAND: &[&str] = &[
    "as", "async", "box", "break", "const", "continue", "do", "dyn", "else", "enum", "extern",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "try", "type", "unsafe", "use", "where", "while",
    "yield",
];

/// Keywords that, in a `while`/`for` header, may own a brace group of their own.
const OPENS_A_BLOCK: &[&str] = &[
    "async", "const", "else", "for", "if", "loop", "match", "move", "static", "try", "unsafe",
    "while",
];

/// Keywords that start a nested item.
const ITEMS: &[&str] = &[
    "enum", "extern", "fn", "impl", "mod", "static", "struct", "trait", "type", "use",
];

impl StepBoundaries<'_> {
    /// The tokens of a macro invocation `name!(tokens)` with a step boundary in each of its
    /// loops, or `None` when it has none (or is [`UNTOUCHED`]): the caller keeps the tokens.
    pub(crate) fn macro_tokens(
        &mut self,
        name: &Ident,
        tokens: &TokenStream,
    ) -> Option<TokenStream> {
        if UNTOUCHED.iter().any(|m| name == m) {
            return None;
        }
        let before = self.loops;
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        let tokens = match parser.parse2(tokens.clone()) {
            Ok(mut exprs) => {
                for expr in exprs.iter_mut() {
                    self.visit_expr_mut(expr);
                }
                exprs.into_token_stream()
            }
            Err(_) => self.walk(tokens.clone()),
        };
        (self.loops > before).then_some(tokens)
    }

    /// The walk over tokens that are not comma-separated expressions (see the module docs).
    fn walk(&mut self, stream: TokenStream) -> TokenStream {
        let trees: Vec<TokenTree> = stream.into_iter().collect();
        let mut out = TokenStream::new();
        // The last token copied at this level: whether an operand just ended.
        let mut prev: Option<TokenTree> = None;
        // Inside a closure, up to the end of its segment.
        let mut skipping = false;
        let mut i = 0;
        while i < trees.len() {
            let tree = &trees[i];
            // How many trees this step consumes, copied as they are unless `out` was extended.
            let mut taken = 1;
            let mut copy = true;
            if skipping {
                skipping = !ends_segment(&trees, i);
                if is_punct(tree, '=') && is_punct_at(&trees, i + 1, '>') {
                    taken = 2;
                }
            } else {
                match tree {
                    // `::<{ N }>`: a const generic argument, not code of the body.
                    TokenTree::Group(group)
                        if group.delimiter() == Delimiter::Brace
                            && is_punct_opt(prev.as_ref(), '<') => {}
                    TokenTree::Group(group) => {
                        out.extend([self.group(group)]);
                        copy = false;
                    }
                    TokenTree::Punct(p) => match p.as_char() {
                        // `#[..]`, `#![..]`: attributes are copied.
                        '#' if is_bracket_at(&trees, i + 1) => taken = 2,
                        '#' if is_punct_at(&trees, i + 1, '!') && is_bracket_at(&trees, i + 2) => {
                            taken = 3
                        }
                        // A label or lifetime: the word after it is a name, not a keyword.
                        '\'' => taken = 2,
                        '|' if continues_operator(prev.as_ref()) => {}
                        '|' if !ends_operand(prev.as_ref()) => {
                            // A closure: its parameters (whose `,` do not end it), then its
                            // body, skipped to the end of its segment.
                            skipping = true;
                            let no_parameters =
                                p.spacing() == Spacing::Joint && is_punct_at(&trees, i + 1, '|');
                            let close = if no_parameters {
                                None
                            } else {
                                (i + 1..trees.len()).find(|&j| is_punct_at(&trees, j, '|'))
                            };
                            if let Some(close) = close {
                                taken = close + 1 - i;
                            }
                        }
                        _ => {}
                    },
                    TokenTree::Literal(_) => {}
                    TokenTree::Ident(ident) => {
                        let word = ident.to_string();
                        let word = word.as_str();
                        let next_is_brace = is_brace_at(&trees, i + 1);
                        if word == "loop" && next_is_brace {
                            out.extend([tree.clone(), self.body(&trees[i + 1], ident.span())]);
                            (taken, copy) = (2, false);
                        } else if word == "while" || word == "for" {
                            if let Some(body) = loop_body(&trees, i, word == "for") {
                                let header: TokenStream =
                                    trees[i + 1..body].iter().cloned().collect();
                                out.extend([tree.clone()]);
                                out.extend(self.walk(header));
                                out.extend([self.body(&trees[body], ident.span())]);
                                (taken, copy) = (body + 1 - i, false);
                            }
                        } else if word == "gen" {
                            // `gen { .. }`, `gen move { .. }` (a generator block); anything
                            // else is an identifier (edition 2021: `rng.gen()`).
                            let with_move = usize::from(is_ident_at(&trees, i + 1, "move"));
                            if is_brace_at(&trees, i + 1 + with_move) {
                                taken = 2 + with_move;
                            }
                        } else if word == "async" || word == "const" {
                            let with_move =
                                usize::from(word != "const" && is_ident_at(&trees, i + 1, "move"));
                            if is_brace_at(&trees, i + 1 + with_move) {
                                // An `async` or `const` block: its own body.
                                taken = 2 + with_move;
                            } else if with_move == 1 || is_punct_at(&trees, i + 1, '|') {
                                // `async |..|`, `async move |..|`: a closure, which the `|`
                                // rule skips (`async` and `move` do not end an operand).
                            } else {
                                // `const X: T = ..;`, `const fn`, `async fn`.
                                taken = item_end(&trees, i) + 1 - i;
                            }
                        } else if ITEMS.contains(&word)
                            || (word == "union"
                                && matches!(trees.get(i + 1), Some(TokenTree::Ident(_))))
                            || (word == "macro_rules" && is_punct_at(&trees, i + 1, '!'))
                        {
                            taken = item_end(&trees, i) + 1 - i;
                        } else if is_punct_at(&trees, i + 1, '!') {
                            if let Some(TokenTree::Group(args)) = trees.get(i + 2) {
                                out.extend(trees[i..i + 2].iter().cloned());
                                let tokens = self.macro_tokens(ident, &args.stream());
                                out.extend([match tokens {
                                    Some(tokens) => regroup(args, tokens),
                                    None => trees[i + 2].clone(),
                                }]);
                                (taken, copy) = (3, false);
                            }
                        }
                    }
                }
            }
            let end = (i + taken).min(trees.len());
            if copy {
                out.extend(trees[i..end].iter().cloned());
            }
            prev = Some(trees[end - 1].clone());
            i = end;
        }
        out
    }

    /// A group whose contents were walked.
    fn group(&mut self, group: &Group) -> TokenTree {
        let before = self.loops;
        let tokens = self.walk(group.stream());
        if self.loops == before {
            return TokenTree::Group(group.clone());
        }
        regroup(group, tokens)
    }

    /// A loop's body `{ .. }`, walked, with the step boundary as its first statement (after
    /// inner attributes, which must stay first).
    fn body(&mut self, body: &TokenTree, keyword: Span) -> TokenTree {
        let TokenTree::Group(group) = body else {
            return body.clone();
        };
        let trees: Vec<TokenTree> = self.walk(group.stream()).into_iter().collect();
        let mut attrs = 0;
        while is_punct_at(&trees, attrs, '#')
            && is_punct_at(&trees, attrs + 1, '!')
            && is_bracket_at(&trees, attrs + 2)
        {
            attrs += 3;
        }
        let mut tokens: TokenStream = trees[..attrs].iter().cloned().collect();
        tokens.extend(self.check(keyword));
        tokens.extend(trees[attrs..].iter().cloned());
        regroup(group, tokens)
    }
}

/// `tokens` in the delimiters and at the span of `group`.
fn regroup(group: &Group, tokens: TokenStream) -> TokenTree {
    let mut new = Group::new(group.delimiter(), tokens);
    new.set_span(group.span());
    TokenTree::Group(new)
}

/// The index of the body of the `while`/`for` at `keyword`, if its header is one whose end
/// is certain: see the module docs.
fn loop_body(trees: &[TokenTree], keyword: usize, is_for: bool) -> Option<usize> {
    let mut saw_in = false;
    let mut prev: Option<&TokenTree> = None;
    for (j, tree) in trees.iter().enumerate().skip(keyword + 1) {
        match tree {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                let ends = ends_operand(prev) || is_punct_opt(prev, '.');
                return (ends && (saw_in || !is_for)).then_some(j);
            }
            TokenTree::Ident(ident) if ident == "in" => saw_in = true,
            TokenTree::Ident(ident) if OPENS_A_BLOCK.iter().any(|k| ident == k) => return None,
            TokenTree::Ident(ident) if ident == "gen" && is_brace_at(trees, j + 1) => return None,
            TokenTree::Punct(p) => match p.as_char() {
                ',' | ';' => return None,
                '=' if is_punct_at(trees, j + 1, '>') => return None,
                '|' if continues_operator(prev) => {}
                '|' if !ends_operand(prev) => return None,
                // A label: `while 'a: { .. } { .. }`; a lifetime is harmless, but rare here.
                '\'' => return None,
                _ => {}
            },
            _ => {}
        }
        prev = Some(tree);
    }
    None
}

/// The index of the last tree of the nested item starting at `start`: its `;`, or its body
/// (the first brace group not in a generic argument or after `=`), or the last tree.
fn item_end(trees: &[TokenTree], start: usize) -> usize {
    let mut prev: Option<&TokenTree> = None;
    for (j, tree) in trees.iter().enumerate().skip(start + 1) {
        match tree {
            TokenTree::Punct(p) if p.as_char() == ';' => return j,
            TokenTree::Group(g)
                if g.delimiter() == Delimiter::Brace
                    && !['<', ',', '='].iter().any(|&c| is_punct_opt(prev, c)) =>
            {
                return j;
            }
            _ => {}
        }
        prev = Some(tree);
    }
    trees.len().saturating_sub(1)
}

/// Whether the tree before this one ends an operand, so that a `|` here is a binary operator
/// and a brace group here cannot belong to the expression.
fn ends_operand(prev: Option<&TokenTree>) -> bool {
    match prev {
        Some(TokenTree::Literal(_)) => true,
        Some(TokenTree::Group(g)) => g.delimiter() != Delimiter::Brace,
        Some(TokenTree::Ident(ident)) => !NOT_AN_OPERAND.iter().any(|k| ident == k),
        Some(TokenTree::Punct(p)) => p.as_char() == '?',
        None => false,
    }
}

/// Whether the tree before a `|` is a joint `|` (`||`), so this `|` finishes that operator.
fn continues_operator(prev: Option<&TokenTree>) -> bool {
    matches!(prev, Some(TokenTree::Punct(p)) if p.as_char() == '|' && p.spacing() == Spacing::Joint)
}

/// Whether a closure skipped from before ends at tree `i`: a `,`, a `;` or the `=` of `=>`.
fn ends_segment(trees: &[TokenTree], i: usize) -> bool {
    is_punct_at(trees, i, ',')
        || is_punct_at(trees, i, ';')
        || (is_punct_at(trees, i, '=') && is_punct_at(trees, i + 1, '>'))
}

fn is_punct(tree: &TokenTree, c: char) -> bool {
    matches!(tree, TokenTree::Punct(p) if p.as_char() == c)
}

fn is_punct_opt(tree: Option<&TokenTree>, c: char) -> bool {
    tree.is_some_and(|t| is_punct(t, c))
}

fn is_punct_at(trees: &[TokenTree], i: usize, c: char) -> bool {
    is_punct_opt(trees.get(i), c)
}

fn is_brace_at(trees: &[TokenTree], i: usize) -> bool {
    matches!(trees.get(i), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace)
}

fn is_bracket_at(trees: &[TokenTree], i: usize) -> bool {
    matches!(trees.get(i), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket)
}

fn is_ident_at(trees: &[TokenTree], i: usize, word: &str) -> bool {
    matches!(trees.get(i), Some(TokenTree::Ident(ident)) if ident == word)
}

#[cfg(test)]
mod tests {
    use proc_macro2::{Span, TokenStream};
    use quote::quote;
    use syn::Ident;

    use crate::expand::StepBoundaries;

    /// The macro's tokens after instrumentation, or `None` when they are left as written,
    /// and the number of boundaries put in.
    fn instrumented(name: &str, tokens: TokenStream) -> (Option<String>, usize) {
        let scope = Ident::new("__scope", Span::call_site());
        let mut steps = StepBoundaries::new(&scope);
        let out = steps.macro_tokens(&Ident::new(name, Span::call_site()), &tokens);
        (out.map(|t| t.to_string()), steps.loops)
    }

    fn boundaries(name: &str, tokens: TokenStream) -> usize {
        instrumented(name, tokens).1
    }

    #[test]
    fn comma_separated_expressions_are_visited_like_the_body() {
        let (out, loops) = instrumented(
            "vec",
            quote!(
                loop {
                    break 1;
                },
                (|| loop {})(),
                async { loop {} },
                2,
            ),
        );
        assert_eq!(loops, 1);
        let out = out.unwrap();
        assert!(out.starts_with("loop { if let"), "{out}");
        assert!(out.ends_with(", 2 ,"), "the trailing comma stays: {out}");
    }

    #[test]
    fn select_arms_get_a_boundary_in_each_loop_body() {
        let (out, loops) = instrumented(
            "select",
            quote! {
                biased;
                v = f(), if ready => { 'a: for x in v { while x < 3 { break 'a; } } }
                _ = g() => loop { h().await; },
                else => {}
            },
        );
        assert_eq!(loops, 3);
        let out = out.unwrap();
        assert!(out.contains("'a : for x in v { if let"), "{out}");
        assert!(out.contains("while x < 3 { if let"), "{out}");
        assert!(out.contains("=> loop { if let"), "{out}");
    }

    #[test]
    fn a_header_that_may_own_the_first_brace_gets_no_boundary_of_its_own() {
        for header in [
            quote!(while match x {
                _ => true,
            } {}),
            quote!(while { x } {}),
            quote!(while if a { b } else { c } {}),
            quote!(for x in unsafe { y } {}),
            quote!(while 'a: { true } {}),
            quote!(for x in || {} {}),
            quote!(for x in m! {} {}),
            quote!(for<'a> F: Fn(&'a u8) { }),
            quote!(while a == { b } {}),
        ] {
            let (out, loops) = instrumented("dsl", quote!(; #header));
            assert_eq!((out, loops), (None, 0), "{header}");
        }
        // Loops in its groups still get theirs.
        assert_eq!(
            boundaries("dsl", quote!(; while match x { _ => loop {} } { loop {} })),
            2
        );
    }

    #[test]
    fn certain_headers_get_a_boundary() {
        for header in [
            quote!(for x in y {}),
            quote!(for (i, x) in v.iter().enumerate() {}),
            quote!(for i in 0.. {}),
            quote!(for x in [1, 2] {}),
            quote!(for x in it.filter(|x| { x > 1 }) {}),
            quote!(while let Some(x) = s.pop() {}),
            quote!(while a || b {}),
            quote!(while f()? {}),
            quote!(for _ in 0..rng.gen::<u8>() {}),
            quote!(while x.await {}),
        ] {
            assert_eq!(boundaries("dsl", quote!(; #header)), 1, "{header}");
        }
    }

    #[test]
    fn closures_blocks_and_items_are_skipped() {
        for skipped in [
            quote!(; let f = |x| loop {}; ),
            quote!(; let f = |a, b| loop {}; ),
            quote!(; let f = |a: (u8, u8), b: Vec<u8>| { loop {} }; ),
            quote!(; let f = | | loop {}; ),
            quote!(; f(|a, b| loop {}, 1); ),
            quote!(; let f = async move |a, b| { loop {} }; ),
            quote!(; let f = move || { loop {} }; ),
            quote!(; let f = async move |x| { loop {} }; ),
            quote!(; let b = async { loop {} }; ),
            quote!(; let b = async move { loop {} }; ),
            quote!(; let g = gen { loop {} }; ),
            quote!(; let c = const { loop {} }; ),
            quote!(; const C: u8 = { loop {} }; ),
            quote!(; fn f() -> u8 { loop {} } ),
            quote!(; async fn f() { loop {} } ),
            quote!(; impl W<{ 1 + 1 }> { fn f() { loop {} } } ),
            quote!(; struct S { a: [u8; { loop {} }] } ),
            quote!(; macro_rules! m { () => { loop {} } } ),
            quote!(; let s = stringify!(loop {}); ),
            quote!(; f::<{ loop {} }>(); ),
        ] {
            assert_eq!(instrumented("dsl", skipped.clone()), (None, 0), "{skipped}");
        }
        // A loop after the skipped part still gets its boundary.
        assert_eq!(boundaries("dsl", quote!(; fn f() { loop {} } loop {})), 1);
        assert_eq!(boundaries("dsl", quote!(; let f = || loop {}; loop {})), 1);
    }

    #[test]
    fn labels_lifetimes_attributes_and_operators_are_copied() {
        let (out, loops) = instrumented(
            "dsl",
            quote!(; let s: &'static str = x; #[allow(unused)] a |= b; 'l: loop { #![allow(unused)] break 'l; }),
        );
        assert_eq!(loops, 1);
        let out = out.unwrap();
        assert!(out.contains("& 'static str = x ;"), "{out}");
        assert!(out.contains("# [allow (unused)] a |= b ;"), "{out}");
        assert!(
            out.contains("'l : loop { # ! [allow (unused)] if let"),
            "inner attributes stay first: {out}"
        );
    }

    #[test]
    fn macros_that_do_not_run_their_input_are_untouched() {
        for name in ["stringify", "concat", "quote", "include_str", "macro_rules"] {
            assert_eq!(instrumented(name, quote!(loop {})), (None, 0), "{name}");
        }
        // Nested in a walked macro, too; other nested macros are instrumented.
        assert_eq!(
            boundaries("dsl", quote!(; stringify!(loop {}); vec![loop {}]; )),
            1
        );
    }
}
