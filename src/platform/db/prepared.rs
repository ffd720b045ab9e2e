//! Prepared raw statements (see [`prepared_statement!`](crate::prepared_statement)).

/// A raw statement with a static type, so each connection prepares it once and reuses it:
/// diesel caches statements by their query's type, while a `sql_query` is parsed and planned
/// again on every execution (which for a hot statement costs more than running it). The SQL
/// marks each bind with `??`, filled in field order; the struct's fields are the binds.
/// Modules use it in their `store.rs`, like any statement naming their tables.
#[macro_export]
macro_rules! prepared_statement {
    (
        $(#[$meta:meta])*
        $name:ident -> $sql_type:ty {
            $($field:ident : $rust:ty => $st:ty),* $(,)?
        }
        $sql:expr
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(pub $field: $rust,)*
        }

        impl diesel::query_builder::QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::query_builder::Query for $name {
            type SqlType = $sql_type;
        }

        impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
            ) -> diesel::QueryResult<()> {
                // Not mutated by a statement without parameters.
                #[allow(unused_mut)]
                let mut parts = $sql.split("??");
                $(
                    out.push_sql(parts.next().unwrap_or_default());
                    out.push_bind_param::<$st, _>(&self.$field)?;
                )*
                for rest in parts {
                    out.push_sql(rest);
                }
                Ok(())
            }
        }

    };
}
