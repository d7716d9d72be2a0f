//! Generating the budgeted function from the parsed arguments and the user's `async fn`.
//!
//! The function keeps its attributes, visibility and signature as written; its body becomes:
//!
//! ```text
//! let __scope = <krate>::scope::TaskScope::builder(<attribution>)
//!     .tokens(<limit>) <.money(..)> <.max_steps(..)> <.runaway(..)>
//!     .child_of_current()
//!     .build();
//! __scope.clone().run(async move { <body, a step boundary at the top of each loop> }).await
//! ```
//!
//! `__scope` and the step boundary's error binding are `Span::mixed_site()` identifiers: the
//! user's code can neither see nor shadow them.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::visit_mut::{self, VisitMut};
use syn::{
    AttrStyle, Block, Expr, ExprAsync, ExprClosure, ExprConst, ExprForLoop, ExprLoop, ExprRepeat,
    ExprWhile, GenericArgument, Ident, Item, ItemFn, Macro, Pat, PathArguments, ReturnType,
    Signature, Stmt, Type,
};

use crate::attr::{Args, Int, Runaway, RunawayOverrides};

/// The message for a function that does not return a `Result`.
const RESULT_REQUIRED: &str =
    "#[budgeted] functions must return Result<T, E> where E: From<BudgetError>";

/// Checks that the function can be budgeted: an `async fn` returning a `Result`.
pub(crate) fn check(sig: &Signature) -> syn::Result<()> {
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            "#[budgeted] works on async fns only",
        ));
    }
    match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => Ok(()),
        ReturnType::Type(_, ty) => Err(syn::Error::new_spanned(ty, RESULT_REQUIRED)),
        ReturnType::Default => Err(syn::Error::new_spanned(
            sig,
            format!("{RESULT_REQUIRED}; this function returns ()"),
        )),
    }
}

/// Whether `ty` is a path whose last segment is `Result` with one or two generic arguments:
/// `Result<T, E>`, `std::result::Result<T, E>`, `anyhow::Result<T>`, `io::Result<T>`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.path.segments.last().is_some_and(|last| {
            last.ident == "Result"
                && matches!(
                    &last.arguments,
                    PathArguments::AngleBracketed(generics) if (1..=2).contains(&generics.args.len())
                )
        }),
        Type::Group(group) => returns_result(&group.elem),
        Type::Paren(paren) => returns_result(&paren.elem),
        _ => false,
    }
}

/// The budgeted function. `item` must have passed [`check`].
pub(crate) fn expand(args: Args, item: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = item;
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::token_budget),
    };
    let scope = Ident::new("__scope", Span::mixed_site());

    let mut steps = StepBoundaries::new(&scope);
    let mut body: Block = *block;
    steps.visit_block_mut(&mut body);

    let builder = scope_builder(&args, &krate);
    // Without any loop the body never refers to the scope: no clone is needed.
    let run = if steps.loops > 0 {
        quote!(#scope.clone().run(async move #body).await)
    } else {
        quote!(#scope.run(async move #body).await)
    };
    let outer = attrs.iter().filter(|a| matches!(a.style, AttrStyle::Outer));
    let inner = attrs
        .iter()
        .filter(|a| matches!(a.style, AttrStyle::Inner(_)));
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            let #scope = #builder;
            #run
        }
    }
}

/// `TaskScope::builder(..)...build()` for the arguments.
fn scope_builder(args: &Args, krate: &TokenStream) -> TokenStream {
    let agent = &args.agent;
    let mut attribution = quote!(#krate::Attribution::agent(#agent));
    if let Some(task) = &args.task {
        let text = to_string(task);
        attribution.extend(quote!(.with_task(#krate::TaskId::new(#text))));
    }
    if let Some(user) = &args.user {
        let text = to_string(user);
        attribution.extend(quote!(.with_user(#text)));
    }
    if let Some(span) = args.critical {
        attribution.extend(quote_spanned!(span=> .critical(true)));
    }

    let limit = u64_literal(args.limit);
    let mut builder = quote! {
        #krate::scope::TaskScope::builder(#attribution).tokens(#limit)
    };
    if let Some(cost) = args.cost_limit {
        let mut units = Literal::i128_suffixed(cost.value);
        units.set_span(cost.span);
        builder.extend(quote!(.money(#krate::Money::from_units(#units))));
    }
    if let Some(max_steps) = args.max_steps {
        let max_steps = u32_literal(max_steps);
        builder.extend(quote!(.max_steps(#max_steps)));
    }
    match &args.runaway {
        None | Some(Runaway::Default) => {}
        Some(Runaway::Disabled(span)) => {
            let config = quote_spanned!(*span=> #krate::runaway::RunawayConfig::disabled());
            builder.extend(quote!(.runaway(#config)));
        }
        Some(Runaway::Custom(overrides)) => {
            if let Some(config) = runaway_config(overrides, krate) {
                builder.extend(quote!(.runaway(#config)));
            }
        }
    }
    builder.extend(quote!(.child_of_current().build()));
    builder
}

/// `RunawayConfig { field: value, .., ..Default::default() }`, or `None` when no key was given.
fn runaway_config(o: &RunawayOverrides, krate: &TokenStream) -> Option<TokenStream> {
    let fields: Vec<TokenStream> = [
        ("repeat_limit", o.repeat.map(u32_literal)),
        ("similarity_bits", o.similarity.map(u32_literal)),
        ("spike_factor", o.spike.map(u64_literal)),
        ("spike_after_steps", o.spike_after.map(u32_literal)),
        ("spike_min_tokens", o.spike_min_tokens.map(u64_literal)),
        ("retry_factor", o.retries.map(u64_literal)),
    ]
    .into_iter()
    .filter_map(|(field, value)| {
        let value = value?;
        let field = Ident::new(field, value.span());
        Some(quote!(#field: #value))
    })
    .collect();
    if fields.is_empty() {
        return None;
    }
    Some(quote! {
        #krate::runaway::RunawayConfig {
            #(#fields,)*
            ..::core::default::Default::default()
        }
    })
}

/// `ToString::to_string(&(expr))`, spanned at the expression so that a type without `Display`
/// is reported there.
fn to_string(expr: &Expr) -> TokenStream {
    let span = syn::spanned::Spanned::span(expr);
    quote_spanned!(span=> ::std::string::ToString::to_string(&(#expr)))
}

fn u64_literal(int: Int<u64>) -> Literal {
    let mut lit = Literal::u64_suffixed(int.value);
    lit.set_span(int.span);
    lit
}

fn u32_literal(int: Int<u32>) -> Literal {
    let mut lit = Literal::u32_suffixed(int.value);
    lit.set_span(int.span);
    lit
}

/// Puts a step boundary at the top of every loop of the function's own body, macro
/// invocations included (see [`crate::in_macros`]). Closures, nested items, `async` blocks
/// and `const` blocks are left alone: a `return` there would not leave the budgeted function.
/// So are types, patterns, array lengths and const generic arguments: they are evaluated at
/// compile time, where the scope does not exist.
pub(crate) struct StepBoundaries<'a> {
    scope: &'a Ident,
    /// How many loops were instrumented.
    pub(crate) loops: usize,
}

impl<'a> StepBoundaries<'a> {
    /// No loop instrumented yet; the boundaries will refer to `scope`.
    pub(crate) fn new(scope: &'a Ident) -> StepBoundaries<'a> {
        StepBoundaries { scope, loops: 0 }
    }

    /// The step boundary of one loop:
    ///
    /// ```text
    /// if let Err(__e) = __scope.step_boundary() { return Err(From::from(__e)); }
    /// ```
    ///
    /// spanned (mixed-site) at the loop's keyword, so that an error type without
    /// `From<BudgetError>` is reported at the loop.
    pub(crate) fn check(&mut self, keyword: Span) -> TokenStream {
        self.loops += 1;
        let span = Span::mixed_site().located_at(keyword);
        let scope = Ident::new(&self.scope.to_string(), span);
        let error = Ident::new("__e", span);
        quote_spanned! {span=>
            if let ::core::result::Result::Err(#error) = #scope.step_boundary() {
                return ::core::result::Result::Err(::core::convert::From::from(#error));
            }
        }
    }

    /// Inserts the step boundary as the first statement of `body`.
    fn instrument(&mut self, body: &mut Block, keyword: Span) {
        let check = self.check(keyword);
        body.stmts
            .insert(0, Stmt::Expr(Expr::Verbatim(check), None));
    }
}

impl VisitMut for StepBoundaries<'_> {
    fn visit_expr_loop_mut(&mut self, node: &mut ExprLoop) {
        visit_mut::visit_expr_loop_mut(self, node);
        self.instrument(&mut node.body, node.loop_token.span);
    }

    fn visit_expr_while_mut(&mut self, node: &mut ExprWhile) {
        visit_mut::visit_expr_while_mut(self, node);
        self.instrument(&mut node.body, node.while_token.span);
    }

    fn visit_expr_for_loop_mut(&mut self, node: &mut ExprForLoop) {
        visit_mut::visit_expr_for_loop_mut(self, node);
        self.instrument(&mut node.body, node.for_token.span);
    }

    fn visit_macro_mut(&mut self, node: &mut Macro) {
        let Some(name) = node.path.segments.last().map(|s| s.ident.clone()) else {
            return;
        };
        if let Some(tokens) = self.macro_tokens(&name, &node.tokens) {
            node.tokens = tokens;
        }
    }

    fn visit_expr_repeat_mut(&mut self, node: &mut ExprRepeat) {
        // `[value; len]`: `len` is a constant.
        self.visit_expr_mut(&mut node.expr);
    }

    fn visit_expr_closure_mut(&mut self, _: &mut ExprClosure) {}

    fn visit_expr_async_mut(&mut self, _: &mut ExprAsync) {}

    fn visit_expr_const_mut(&mut self, _: &mut ExprConst) {}

    fn visit_item_mut(&mut self, _: &mut Item) {}

    fn visit_type_mut(&mut self, _: &mut Type) {}

    fn visit_pat_mut(&mut self, _: &mut Pat) {}

    fn visit_generic_argument_mut(&mut self, _: &mut GenericArgument) {}
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::{check, expand};
    use crate::attr::Args;

    fn expanded(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        let args: Args = syn::parse2(args).unwrap();
        let item: syn::ItemFn = syn::parse2(item).unwrap();
        check(&item.sig).unwrap();
        expand(args, item).to_string()
    }

    #[test]
    fn only_the_function_s_own_loops_get_a_step_boundary() {
        let out = expanded(
            quote!(agent = "researcher", limit = 50_000, crate = budget_core),
            quote! {
                async fn f() -> Result<(), E> {
                    'outer: for i in 0..3 { while i > 0 { break 'outer; } }
                    let c = || loop {};
                    let b = async { loop {} };
                    fn g() { loop {} }
                    const { loop {} };
                    Ok(())
                }
            },
        );
        assert_eq!(out.matches("step_boundary").count(), 2, "{out}");
        assert!(
            out.contains("__scope . clone () . run (async move"),
            "{out}"
        );
        assert!(
            out.contains("budget_core :: scope :: TaskScope :: builder"),
            "{out}"
        );
        assert!(out.contains(". tokens (50000u64)"), "{out}");
        assert!(out.contains(". child_of_current () . build ()"), "{out}");
    }

    #[test]
    fn every_argument_becomes_a_builder_call() {
        let out = expanded(
            quote! {
                agent = "support", limit = 8_000, cost_limit = "$0.50", max_steps = 20,
                task = t.id, user = u, critical, runaway(repeat = 4, retries = 2)
            },
            quote!(
                async fn f(t: &T, u: &str) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        for part in [
            ":: token_budget :: Attribution :: agent (\"support\")",
            ". with_task (:: token_budget :: TaskId :: new (:: std :: string :: ToString :: to_string (& (t . id))))",
            ". with_user (:: std :: string :: ToString :: to_string (& (u)))",
            ". critical (true)",
            ". money (:: token_budget :: Money :: from_units (500000000000000000000000i128))",
            ". max_steps (20u32)",
            "repeat_limit : 4u32 , retry_factor : 2u64 , .. :: core :: default :: Default :: default ()",
            "__scope . run (async move",
        ] {
            assert!(out.contains(part), "{part} not in {out}");
        }
    }
}
