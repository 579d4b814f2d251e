"""What the orochi extension put into a database, object by object, as
comparable values: every member of the extension (pg_depend deptype 'e')
keyed by its identity (pg_identify_object), with the properties that make
it behave as it does.  Used to check that an updated extension is the
extension a fresh install makes.

Columns of tables and views are compared by name (type,
default, ...) and by their order, leaving out dropped columns: an update
may drop a column where a fresh install never made it, and the attribute
numbers then differ while what a user sees does not.
ACLs are compared as sets of grants, a NULL ACL as the owner's default.
"""

from __future__ import annotations

import difflib
import json

# every member: kind and identity (the key), owner, comment
MEMBERS = """
SELECT d.classid::regclass::text, d.objid, o.type, o.identity,
       obj_description(d.objid, d.classid::regclass::name) AS comment
  FROM pg_depend d
  CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) o
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'orochi')
   AND d.deptype = 'e'
"""

ACL = """(SELECT coalesce(array_agg(x ORDER BY x), '{{}}') FROM (
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END || '=' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
                   || '/' || a.grantor::regrole::text AS x
              FROM aclexplode(coalesce({acl}, acldefault(({kind})::"char", {owner}))) a) s)"""

ROLE = "CASE WHEN {0} = 10 THEN '(bootstrap superuser)' ELSE {0}::regrole::text END"

QUERIES = {
    "pg_proc": f"""
SELECT p.oid, jsonb_build_object(
    'kind', p.prokind,
    'arguments', pg_get_function_arguments(p.oid),
    'result', pg_get_function_result(p.oid),
    'language', l.lanname,
    'prosrc', p.prosrc,
    'sqlbody', pg_get_function_sqlbody(p.oid),
    'probin', p.probin,
    'volatility', p.provolatile,
    'strict', p.proisstrict,
    'parallel', p.proparallel,
    'security_definer', p.prosecdef,
    'leakproof', p.proleakproof,
    'proconfig', p.proconfig,
    'cost', p.procost,
    'rows', p.prorows,
    'support', p.prosupport::regprocedure::text,
    'owner', {ROLE.format('p.proowner')},
    'acl', {ACL.format(acl='p.proacl', kind="'f'", owner='p.proowner')})
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
""",
    "aggregate": """
SELECT a.aggfnoid::oid, jsonb_build_object(
    'aggkind', a.aggkind, 'aggnumdirectargs', a.aggnumdirectargs,
    'aggtransfn', a.aggtransfn::regprocedure::text, 'aggfinalfn', a.aggfinalfn::regprocedure::text,
    'aggcombinefn', a.aggcombinefn::regprocedure::text, 'aggserialfn', a.aggserialfn::regprocedure::text,
    'aggdeserialfn', a.aggdeserialfn::regprocedure::text, 'aggmtransfn', a.aggmtransfn::regprocedure::text,
    'aggminvtransfn', a.aggminvtransfn::regprocedure::text, 'aggmfinalfn', a.aggmfinalfn::regprocedure::text,
    'aggfinalextra', a.aggfinalextra, 'aggmfinalextra', a.aggmfinalextra,
    'aggfinalmodify', a.aggfinalmodify, 'aggmfinalmodify', a.aggmfinalmodify,
    'aggsortop', a.aggsortop::regoperator::text, 'aggtranstype', a.aggtranstype::regtype::text,
    'aggtransspace', a.aggtransspace, 'aggmtranstype', a.aggmtranstype::regtype::text,
    'aggmtransspace', a.aggmtransspace, 'agginitval', a.agginitval, 'aggminitval', a.aggminitval)
  FROM pg_aggregate a
""",
    "pg_class": f"""
SELECT c.oid, jsonb_build_object(
    'relkind', c.relkind,
    'persistence', c.relpersistence,
    'owner', {ROLE.format('c.relowner')},
    'acl', {ACL.format(acl='c.relacl', kind="CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END", owner='c.relowner')},
    'reloptions', c.reloptions,
    'rowsecurity', c.relrowsecurity,
    'replident', c.relreplident,
    'viewdef', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
    'columns', (SELECT jsonb_object_agg(a.attname, jsonb_build_object(
                    'type', format_type(a.atttypid, a.atttypmod),
                    'not_null', a.attnotnull,
                    'default', pg_get_expr(ad.adbin, ad.adrelid),
                    'identity', a.attidentity, 'generated', a.attgenerated,
                    'collation', a.attcollation::regcollation::text,
                    'storage', a.attstorage,
                    'acl', a.attacl))
                  FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    'column_order', (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    'constraints', (SELECT jsonb_object_agg(k.conname, k.contype::text || ' ' || pg_get_constraintdef(k.oid))
                      FROM pg_constraint k WHERE k.conrelid = c.oid),
    'indexes', (SELECT jsonb_object_agg(i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid))
                  FROM pg_index i WHERE i.indrelid = c.oid),
    'triggers', (SELECT jsonb_object_agg(t.tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text)
                   FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
    'rules', (SELECT jsonb_object_agg(r.rulename, pg_get_ruledef(r.oid))
                FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'),
    'policies', (SELECT jsonb_object_agg(p.polname, jsonb_build_object(
                     'cmd', p.polcmd, 'permissive', p.polpermissive,
                     'roles', p.polroles::regrole[]::text[],
                     'using', pg_get_expr(p.polqual, p.polrelid),
                     'check', pg_get_expr(p.polwithcheck, p.polrelid)))
                   FROM pg_policy p WHERE p.polrelid = c.oid),
    'sequence', (SELECT jsonb_build_object(
                     'type', s.seqtypid::regtype::text, 'start', s.seqstart, 'increment', s.seqincrement,
                     'max', s.seqmax, 'min', s.seqmin, 'cache', s.seqcache, 'cycle', s.seqcycle,
                     'owned_by', (SELECT dd.refobjid::regclass::text || '.' || att.attname
                                    FROM pg_depend dd
                                    JOIN pg_attribute att ON att.attrelid = dd.refobjid AND att.attnum = dd.refobjsubid
                                   WHERE dd.classid = 'pg_class'::regclass AND dd.objid = c.oid
                                     AND dd.refclassid = 'pg_class'::regclass AND dd.deptype IN ('a', 'i')))
                   FROM pg_sequence s WHERE s.seqrelid = c.oid))
  FROM pg_class c
""",
    "pg_type": f"""
SELECT t.oid, jsonb_build_object(
    'typtype', t.typtype, 'len', t.typlen, 'byval', t.typbyval, 'category', t.typcategory,
    'preferred', t.typispreferred, 'delim', t.typdelim,
    'input', t.typinput::regprocedure::text, 'output', t.typoutput::regprocedure::text,
    'receive', t.typreceive::regprocedure::text, 'send', t.typsend::regprocedure::text,
    'modin', t.typmodin::regprocedure::text, 'modout', t.typmodout::regprocedure::text,
    'analyze', t.typanalyze::regprocedure::text, 'subscript', t.typsubscript::regprocedure::text,
    'align', t.typalign, 'storage', t.typstorage, 'notnull', t.typnotnull,
    'basetype', format_type(t.typbasetype, t.typtypmod), 'element', t.typelem::regtype::text,
    'default', t.typdefault, 'collation', t.typcollation::regcollation::text,
    'owner', {ROLE.format('t.typowner')},
    'acl', {ACL.format(acl='t.typacl', kind="'T'", owner='t.typowner')},
    'enum', (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
    'domain_constraints', (SELECT jsonb_object_agg(k.conname, pg_get_constraintdef(k.oid))
                             FROM pg_constraint k WHERE k.contypid = t.oid),
    'attributes', (SELECT jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
                     FROM pg_attribute a
                    WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped),
    'composite_relkind', (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid))
  FROM pg_type t
""",
    "pg_cast": """
SELECT c.oid, jsonb_build_object(
    'function', c.castfunc::regprocedure::text, 'context', c.castcontext, 'method', c.castmethod)
  FROM pg_cast c
""",
    "pg_operator": f"""
SELECT o.oid, jsonb_build_object(
    'kind', o.oprkind, 'result', o.oprresult::regtype::text, 'code', o.oprcode::regprocedure::text,
    'commutator', o.oprcom::regoperator::text, 'negator', o.oprnegate::regoperator::text,
    'restrict', o.oprrest::regprocedure::text, 'join', o.oprjoin::regprocedure::text,
    'merges', o.oprcanmerge, 'hashes', o.oprcanhash, 'owner', {ROLE.format('o.oprowner')})
  FROM pg_operator o
""",
    "pg_opclass": f"""
SELECT c.oid, jsonb_build_object(
    'method', (SELECT amname FROM pg_am WHERE oid = c.opcmethod),
    'family', c.opcfamily::regclass::text, 'input', c.opcintype::regtype::text,
    'default', c.opcdefault, 'keytype', c.opckeytype::regtype::text, 'owner', {ROLE.format('c.opcowner')})
  FROM pg_opclass c
""",
    "pg_opfamily": f"""
SELECT f.oid, jsonb_build_object(
    'method', (SELECT amname FROM pg_am WHERE oid = f.opfmethod),
    'owner', {ROLE.format('f.opfowner')},
    'operators', (SELECT array_agg(x ORDER BY x) FROM (
                      SELECT format('%s %s %s %s', a.amopstrategy, a.amopopr::regoperator,
                                    a.amoplefttype::regtype, a.amoprighttype::regtype) AS x
                        FROM pg_amop a WHERE a.amopfamily = f.oid) s),
    'procedures', (SELECT array_agg(x ORDER BY x) FROM (
                       SELECT format('%s %s %s %s', p.amprocnum, p.amproc::regprocedure,
                                     p.amproclefttype::regtype, p.amprocrighttype::regtype) AS x
                         FROM pg_amproc p WHERE p.amprocfamily = f.oid) s))
  FROM pg_opfamily f
""",
    "pg_namespace": f"""
SELECT n.oid, jsonb_build_object('owner', {ROLE.format('n.nspowner')},
    'acl', {ACL.format(acl='n.nspacl', kind="'n'", owner='n.nspowner')})
  FROM pg_namespace n
""",
    "pg_foreign_data_wrapper": f"""
SELECT w.oid, jsonb_build_object('handler', w.fdwhandler::regprocedure::text,
    'validator', w.fdwvalidator::regprocedure::text, 'options', w.fdwoptions,
    'owner', {ROLE.format('w.fdwowner')},
    'acl', {ACL.format(acl='w.fdwacl', kind="'F'", owner='w.fdwowner')})
  FROM pg_foreign_data_wrapper w
""",
    "pg_foreign_server": f"""
SELECT s.oid, jsonb_build_object('wrapper', (SELECT fdwname FROM pg_foreign_data_wrapper WHERE oid = s.srvfdw),
    'type', s.srvtype, 'version', s.srvversion, 'options', s.srvoptions,
    'owner', {ROLE.format('s.srvowner')},
    'acl', {ACL.format(acl='s.srvacl', kind="'S'", owner='s.srvowner')})
  FROM pg_foreign_server s
""",
    "pg_event_trigger": f"""
SELECT e.oid, jsonb_build_object('event', e.evtevent, 'function', e.evtfoid::regprocedure::text,
    'enabled', e.evtenabled, 'tags', e.evttags, 'owner', {ROLE.format('e.evtowner')})
  FROM pg_event_trigger e
""",
}

EXTENSION = """
SELECT jsonb_build_object(
    'version', e.extversion, 'relocatable', e.extrelocatable,
    'schema', e.extnamespace::regnamespace::text, 'owner', e.extowner::regrole::text,
    'config', (SELECT jsonb_object_agg(c::regclass::text, coalesce(e.extcondition[i], ''))
                 FROM unnest(e.extconfig) WITH ORDINALITY AS x(c, i)))
  FROM pg_extension e WHERE e.extname = 'orochi'
"""


def snapshot(conn) -> dict[str, dict]:
    """{'<type> <identity>': {property: value}} for every member of the
    extension, plus 'extension orochi' (version, configuration tables)."""
    members = conn.execute(MEMBERS).fetchall()
    details: dict[str, dict[int, dict]] = {}
    for catalog, query in QUERIES.items():
        details[catalog] = dict(conn.execute(query).fetchall())
    result: dict[str, dict] = {}
    for catalog, objid, kind, identity, comment in members:
        props = dict(details.get(catalog, {}).get(objid, {}))
        if catalog == "pg_proc" and objid in details["aggregate"]:
            props["aggregate"] = details["aggregate"][objid]
        props["comment"] = comment
        result[f"{kind} {identity}"] = props
    ext = conn.execute(EXTENSION).fetchone()[0]
    ext.pop("version")
    result["extension orochi"] = ext
    return result


def _show(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True)


def differences(expected: dict[str, dict], actual: dict[str, dict],
                expected_name: str = "fresh", actual_name: str = "updated") -> list[str]:
    """Readable differences between two snapshots, one entry per object."""
    out = []
    for key in sorted(expected.keys() - actual.keys()):
        out.append(f"{key}: only in {expected_name}")
    for key in sorted(actual.keys() - expected.keys()):
        out.append(f"{key}: only in {actual_name}")
    for key in sorted(expected.keys() & actual.keys()):
        a, b = expected[key], actual[key]
        for prop in sorted(a.keys() | b.keys()):
            x, y = a.get(prop), b.get(prop)
            if x == y:
                continue
            if isinstance(x, dict) and isinstance(y, dict):  # columns, indexes, ...: name by name
                for name in sorted(x.keys() | y.keys()):
                    u, v = x.get(name), y.get(name)
                    if u == v:
                        continue
                    if isinstance(u, dict) and isinstance(v, dict):  # a column: what differs in it
                        for attr in sorted(u.keys() | v.keys()):
                            if u.get(attr) != v.get(attr):
                                out.append(f"{key}: {prop} {name}: {attr}: {expected_name} {_show(u.get(attr))}"
                                           f" / {actual_name} {_show(v.get(attr))}")
                    else:
                        out.append(f"{key}: {prop} {name}: {expected_name} {_show(u)} / {actual_name} {_show(v)}")
                continue
            sx, sy = _show(x), _show(y)
            if "\n" in sx or "\n" in sy or len(sx) + len(sy) > 200:
                diff = "\n".join(difflib.unified_diff(sx.splitlines(), sy.splitlines(),
                                                      expected_name, actual_name, lineterm=""))
                out.append(f"{key}: {prop}:\n{diff}")
            else:
                out.append(f"{key}: {prop}: {expected_name} {sx} / {actual_name} {sy}")
    return out
